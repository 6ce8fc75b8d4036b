"""Hook implementations of the ssh-paramiko plugin. Its capabilities land with its own issue; until
then it registers nothing rather than something that does not work."""
