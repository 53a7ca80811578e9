"""Who may call what: transport security, identities, and the one permission check.

- ``permissions.py``: the six permissions, instance-name scopes, ``Identity``.
- ``config.py``: ``[server.tls]`` and ``[server.auth]``; ``exposure.py``: the refusal to
  listen beyond loopback without TLS and authentication.
- ``tls.py``: the port's TLS credentials, re-read when the files change.
- ``tokens.py`` (a file of sha256 hashes, re-read when it changes; cas/file_watch.py), ``jwt_verifier.py``
  (JWTs checked against a JWKS file), ``certificates.py`` (client certificate subjects):
  three ways to name the caller, combined by ``authenticator.py``.
- ``methods.py``: for every RPC method, the permission it needs and where its instance
  name is; ``authorizer.py`` checks it before the service runs, in one place.
- ``caller.py``: the identity of the call in progress, for the few decisions that can
  only be made later (whose operation, whose bot session, may a fetch download).
- ``local_credential.py``: the token the zero-config server gives its own worker.

docs/SECURITY.md describes the model for operators.
"""
