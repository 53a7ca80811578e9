"""Prometheus metrics of the server: the families, and where they are fed.

- ``families.py``: every metric family, on a registry of its own per server (tests run
  several servers in one process).
- ``rpc_timing.py``: ``reapi_rpc_duration_seconds``, timed around each call's handler.
- ``cas_traffic.py``: ``reapi_cas_bytes_total``/``reapi_cas_blobs_total`` counted by a
  store decorator over each instance's CAS.

Metrics are on when the server serves HTTP (``--http-listen``); off, none of these
objects exist and no call pays for them.
"""
