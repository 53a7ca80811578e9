"""The error family shared by stores, the server and the worker.

Each error carries a gRPC status code and a message that names the problem. Code
deep in a store raises; the server converts to a gRPC status exactly once, at its
service boundary (server/boundary.py), and the worker puts ``to_status()`` into an
ExecuteResponse. Context is added by prefixing (``err.with_context("shard b")``),
which keeps the code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Self

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

if TYPE_CHECKING:
    from cas.digest import Digest


class ReapiError(Exception):
    """Base class; subclasses fix the gRPC code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, details: Iterable[object] = ()) -> None:
        super().__init__(message)
        self.message = message
        # Protobuf messages (error_details_pb2.*) packed into the status details.
        self.details = list(details)

    def with_context(self, prefix: str) -> Self:
        """A copy of this error whose message starts with ``prefix: ``."""
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.message = f"{prefix}: {self.message}"
        clone.args = (clone.message,)
        return clone

    @property
    def code_number(self) -> int:
        return int(self.code.value[0])

    def to_status(self) -> status_pb2.Status:
        """The google.rpc.Status form, for per-item statuses and the wire."""
        status = status_pb2.Status(code=self.code_number, message=self.message)
        for detail in self.details:
            packed = any_pb2.Any()
            packed.Pack(detail)  # type: ignore[arg-type]
            status.details.append(packed)
        return status

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(ReapiError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ReapiError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ReapiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ReapiError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRange(ReapiError):
    code = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhausted(ReapiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ReapiError):
    code = grpc.StatusCode.UNAVAILABLE


class Internal(ReapiError):
    code = grpc.StatusCode.INTERNAL


class Aborted(ReapiError):
    code = grpc.StatusCode.ABORTED


class Cancelled(ReapiError):
    code = grpc.StatusCode.CANCELLED


class DeadlineExceeded(ReapiError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class PermissionDenied(ReapiError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unimplemented(ReapiError):
    code = grpc.StatusCode.UNIMPLEMENTED


class MissingBlobs(FailedPrecondition):
    """Inputs absent from the CAS: one ``MISSING`` violation per blob, as REv2 asks.

    Clients (Bazel among them) re-upload and retry only on exactly this shape.
    """

    def __init__(self, digests: Iterable[Digest], what: str = "blobs") -> None:
        self.digests = sorted(set(digests))
        failure = error_details_pb2.PreconditionFailure()
        for digest in self.digests:
            failure.violations.add(
                type="MISSING",
                subject=f"blobs/{digest.hash}/{digest.size_bytes}",
                description=f"{what}: {digest} is not in the CAS",
            )
        shown = ", ".join(str(d) for d in self.digests[:5])
        more = f" and {len(self.digests) - 5} more" if len(self.digests) > 5 else ""
        super().__init__(f"{len(self.digests)} missing {what}: {shown}{more}", [failure])


def invalid_field(field: str, description: str) -> InvalidArgument:
    """INVALID_ARGUMENT with a BadRequest field violation naming ``field``."""
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field=field, description=description)
    return InvalidArgument(f"{field}: {description}", [bad])
