"""The scheduler's state in Redis, shared by server replicas (state.py; the keys: README.md)."""
