"""grid plugin: the threshold offload policy."""
