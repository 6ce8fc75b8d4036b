"""grid plugin: the ssh transport, through paramiko."""
