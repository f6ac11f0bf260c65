"""One table turns a file's failure reason into an HTTP status, for the coordinator's
API and a worker's reads alike."""

from __future__ import annotations

from alluxiojob.core.errors import http_status
from alluxiojob.core.reasons import Reason


def test_each_reason_has_one_status() -> None:
    assert http_status(Reason.UFS_NOT_FOUND) == 404
    assert http_status(Reason.PERMISSION_DENIED) == 403
    assert http_status("INVALID_PATH") == 400  # the request's fault
    for reason in Reason:
        status = http_status(reason)
        # A store that fails now and may not later is the server's (503), not the request's.
        assert (status == 503) == (reason in (Reason.IO_ERROR, Reason.UFS_THROTTLED))
        assert status in (400, 403, 404, 503)
