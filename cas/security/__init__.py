"""How a client of another REAPI endpoint proves who it is and checks who answers.

Shared by the worker (its channel to the server) and the ``grpc`` store (a
frontend's channels to its storage nodes), so both read TLS files and token files
the same way: ``pem.py`` (certificates and keys, checked before use; the server's
own TLS files too), ``bearer.py`` (the token file, re-read when it changes),
``channels.py`` (``grpc://``/``grpcs://`` addresses and the channel they open).
"""
