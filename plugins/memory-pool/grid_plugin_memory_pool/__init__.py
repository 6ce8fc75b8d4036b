"""grid plugin: named data kept in the cluster's memory."""
