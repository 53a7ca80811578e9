"""The scheduler: client side (submit, watch, cancel) and worker side (sessions, leases).

``interface.Scheduler`` is the seam the services call; ``policy.SchedulingPolicy``
its one implementation, the decisions written once over a ``state.SchedulerState``
(``state/memory/`` today). docs/SCHEDULER.md describes the model, the split, and
where a Redis-backed state goes.
"""
