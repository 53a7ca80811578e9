"""The disk engine: one file per value, an in-memory LRU index, a snapshot for fast restarts."""
