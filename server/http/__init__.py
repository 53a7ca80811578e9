"""The server's HTTP port: Prometheus metrics at ``/metrics`` and the web console.

``site.py`` binds and runs it (aiohttp, in the server's event loop);
``server/console/`` adds the console's pages to it.
"""
