"""The error family shared by the CLI, REST API, stores and services.

Each error has a stable ``code`` that travels in REST responses, so that the CLI can
pick an exit code and a user sees the same name everywhere.
"""

from __future__ import annotations

from alluxiojob.core.reasons import Reason


class JobServiceError(Exception):
    code = "INTERNAL"
    http_status = 500


class NotFound(JobServiceError):
    code = "NOT_FOUND"
    http_status = 404


class InvalidArgument(JobServiceError):
    code = "INVALID_ARGUMENT"
    http_status = 400


class WrongState(JobServiceError):
    """The request is well formed, but the job (or the service) is not in a state for it."""

    code = "FAILED_PRECONDITION"
    http_status = 409


class IllegalTransition(WrongState):
    """An event that the state table does not allow from the job's current state.

    ``state`` and ``event`` are the ``JobState`` and ``JobEvent`` (typed loosely here,
    because the state table imports this module).
    """

    def __init__(self, message: str, state: object, event: object) -> None:
        super().__init__(message)
        self.state = state
        self.event = event


class InvalidPath(InvalidArgument):
    """A path the job cannot use as given, e.g. a destination inside its own source."""

    code = Reason.INVALID_PATH.value


class PermissionDenied(JobServiceError):
    """A path outside ``alluxio.job.path.allowlist``."""

    code = Reason.PERMISSION_DENIED.value
    http_status = 403


class CapacityExceeded(JobServiceError):
    code = "RESOURCE_EXHAUSTED"
    http_status = 429


class Unavailable(JobServiceError):
    """A dependency (etcd, the job store, a coordinator) cannot be reached right now."""

    code = "UNAVAILABLE"
    http_status = 503


class Fenced(JobServiceError):
    """The job changed under its owner: another coordinator or a user now decides it."""

    code = "FENCED"
    http_status = 409


# The HTTP status of a file's failure reason, wherever a request fails with one (the
# coordinator's API, a worker's reads). A retryable store failure is the server's (503);
# any other reason not listed here is the request's (400).
_REASON_STATUS: dict[str, int] = {
    Reason.UFS_NOT_FOUND: 404,
    Reason.PERMISSION_DENIED: 403,
    Reason.UFS_THROTTLED: 503,
    Reason.IO_ERROR: 503,
}


def http_status(reason: str) -> int:
    """The HTTP status of a failure ``reason`` (a ``Reason`` value)."""
    return _REASON_STATUS.get(reason, 400)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, in order."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def describe_error(exc: BaseException) -> str:
    """One line for an error, looking inside exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_error(e) for e in exc.exceptions)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

