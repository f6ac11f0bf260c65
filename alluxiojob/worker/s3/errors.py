"""S3 errors as S3 clients expect them: a code, its HTTP status, and an XML body.

One table maps every code this API answers with to its status, so a handler raises
``S3Error("NoSuchKey", ...)`` and never picks a status by hand. Messages never carry a
secret: they name keys, buckets and properties only.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

STATUS: dict[str, int] = {
    "AccessDenied": 403,
    "AuthorizationHeaderMalformed": 400,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "InternalError": 500,
    "MethodNotAllowed": 405,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NotImplemented": 501,
    "PreconditionFailed": 412,
    "RequestTimeTooSkewed": 403,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "SlowDown": 503,
}


class S3Error(Exception):
    """An S3 error response. ``resource`` is the request path, echoed in the body."""

    def __init__(self, code: str, message: str, resource: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = STATUS[code]
        self.message = message
        self.resource = resource
        self.headers = headers or {}
        self.op = "Unknown"  # the operation it answers, for the metrics

    def body(self, request_id: str) -> bytes:
        return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>"
                f"<Code>{self.code}</Code><Message>{escape(self.message)}</Message>"
                f"<Resource>{escape(self.resource)}</Resource>"
                f"<RequestId>{request_id}</RequestId></Error>").encode()
