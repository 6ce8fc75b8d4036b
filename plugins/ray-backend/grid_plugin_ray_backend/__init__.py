"""grid plugin: Ray as the cluster's compute engine."""
