"""Hook implementations of the memory-pool plugin. Its capabilities land with its own issue; until
then it registers nothing rather than something that does not work."""
