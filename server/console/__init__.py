"""The web console: server-rendered pages on the HTTP port, like bb-browser's.

No build step and no scripts from elsewhere: each page is HTML written by Python,
with one small inline script where a page follows a live log (server-sent events).

- ``routes.py``: every URL; ``sources.py``: what the pages read.
- ``dashboard.py`` (``/``), ``workers_page.py`` (``/workers``),
  ``operations_page.py`` (``/operations``, ``/operation/NAME``),
  ``live_logs.py`` (``/live/stdout/NAME``: the running action's output as events),
  ``cas_pages.py`` (``/cas/...``: Directory trees, files, downloads),
  ``ac_page.py`` (``/ac``: action cache lookup), ``explain_page.py`` (why a miss).
- ``html.py``: the page frame and small helpers; ``recent.py``: throughput and hit
  rate over the last minutes.
"""
