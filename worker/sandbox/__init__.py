"""Sealed actions: the sandbox each action runs in, its user, its limits (docs/WORKER.md)."""
