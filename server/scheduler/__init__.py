"""The scheduler: client side (submit, watch, cancel) and worker side (sessions, leases).

``interface.Scheduler`` is the seam; ``memory.InMemoryScheduler`` the one
implementation today. docs/SCHEDULER.md describes the model and what a
Redis-backed twin would need.
"""
