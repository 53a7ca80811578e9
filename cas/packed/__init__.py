"""The packed engine: small values appended to memory-mapped segment files, group commit."""
