"""Protocol definitions for reapi: our .proto text and the code generated from it.

Import with the project's fixed aliases, for example::

    from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

Regenerate with ``python -m remote_apis_protos.generate``.
"""
