"""Plugins built into grid-core, each one module registered through the same hooks as any other."""
