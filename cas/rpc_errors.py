"""gRPC failures from another endpoint, turned back into the ReapiError family.

The server converts ReapiError to a gRPC status once, at its boundary; a client of
another REAPI endpoint (cas/remote/store.py, the worker) does the reverse here, once, so
callers above it see the same error classes whether a store is local or remote.
The status details (PreconditionFailure with MISSING violations, BadRequest) are
kept, so a missing-input error from a remote CAS still tells Bazel what to upload.
"""

from __future__ import annotations

import grpc
from google.rpc import status_pb2

from cas import errors
from cas.errors import ReapiError

STATUS_DETAILS_KEY = "grpc-status-details-bin"

_BY_CODE: dict[grpc.StatusCode, type[ReapiError]] = {
    cls.code: cls
    for cls in (
        errors.InvalidArgument,
        errors.NotFound,
        errors.AlreadyExists,
        errors.FailedPrecondition,
        errors.OutOfRange,
        errors.ResourceExhausted,
        errors.Unavailable,
        errors.Internal,
        errors.Aborted,
        errors.Cancelled,
        errors.DeadlineExceeded,
        errors.PermissionDenied,
        errors.Unimplemented,
    )
}
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _error_class(code: grpc.StatusCode) -> type[ReapiError]:
    return _BY_CODE.get(code, ReapiError)


def _unpack_details(status: status_pb2.Status) -> list[object]:
    """The google.rpc detail messages we know how to read; others are dropped."""
    from google.rpc import error_details_pb2

    known = (error_details_pb2.PreconditionFailure, error_details_pb2.BadRequest, error_details_pb2.ErrorInfo)
    out: list[object] = []
    for packed in status.details:
        for message_type in known:
            if packed.Is(message_type.DESCRIPTOR):
                message = message_type()
                packed.Unpack(message)
                out.append(message)
    return out


def error_from_status(status: status_pb2.Status, context: str = "") -> ReapiError:
    """A ReapiError for a non-OK google.rpc.Status (per-item batch statuses, results)."""
    code = _BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    message = f"{context}: {status.message}" if context else status.message
    err = _error_class(code)(message, _unpack_details(status))
    if type(err) is ReapiError:
        err.code = code
    return err


def error_from_rpc(exc: grpc.aio.AioRpcError, context: str = "") -> ReapiError:
    """A ReapiError for a failed call, keeping the code, message and status details."""
    code = exc.code()
    message = exc.details() or code.name
    if context:
        message = f"{context}: {message}"
    details: list[object] = []
    for key, value in exc.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            status.ParseFromString(value)
            details = _unpack_details(status)
    err = _error_class(code)(message, details)
    if type(err) is ReapiError:
        err.code = code
    return err


def link_error(exc: grpc.aio.AioRpcError, context: str, address: str) -> ReapiError:
    """A failed call to an endpoint this process keeps its own data on (a ``grpc``
    store: a frontend's storage node), naming the endpoint's address.

    The node's UNAUTHENTICATED is about *this* process's credentials (its token file
    or client certificate), not the caller's, so it becomes UNAVAILABLE: passed on as
    it is, it would tell a client to fix a token that is fine. A PERMISSION_DENIED
    stays one, and says the identity refused was this server's.
    """
    code = exc.code()
    message = exc.details() or code.name
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return errors.Unavailable(
            f"{context}: {address} refused this server's credentials (the store's token_file or tls_cert): {message}"
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return errors.PermissionDenied(f"{context}: {address} refused this server's identity: {message}")
    return error_from_rpc(exc, f"{context} ({address})")
