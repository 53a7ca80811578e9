"""Redis: the ``redis`` store type (``store.py``) and the one way any part of reapi
connects to Redis, with timeouts, a fail-fast guard, Sentinel URLs and redacted URLs in
messages (``connection.py``; the Redis scheduler state uses it too)."""
