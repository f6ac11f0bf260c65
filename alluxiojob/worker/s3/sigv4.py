"""AWS Signature Version 4, checked for real: the decision, with no I/O.

Two forms, as S3 has them:
- the ``Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…``
  header, with ``X-Amz-Date`` no more than ``MAX_SKEW`` (15 minutes) from our clock;
- a presigned URL (``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``,
  ``X-Amz-Expires``, ``X-Amz-SignedHeaders``, ``X-Amz-Signature`` in the query), valid
  from its date until ``X-Amz-Expires`` seconds later (at most 7 days).

The payload hash is whatever the client signed (``x-amz-content-sha256``, or
``UNSIGNED-PAYLOAD`` for presigned URLs): this API reads, so no body is ever used.
Signatures are compared with ``hmac.compare_digest``; no secret enters a message.

``ignored_query`` names parameters that this cluster adds itself (the redirect marker)
and that the client did not sign; ``host`` replaces the ``Host`` header when the request
was signed for another worker of the cluster and redirected here.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from alluxiojob.worker.s3.errors import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = 15 * 60
MAX_EXPIRES = 7 * 24 * 3600
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_AMZ_DATE = re.compile(r"^(\d{8})T(\d{6})Z$")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class SignedRequest:
    method: str
    raw_path: str  # as sent, percent-encoded
    raw_query: str  # as sent, without "?"
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ","


@dataclass(frozen=True)
class Credential:
    access_key: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def _uri_encode(text: str, safe: str) -> str:
    return quote(text, safe=safe + "-_.~")


def query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs in order; a name without ``=`` has an empty value."""
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def _parse_credential(text: str) -> Credential:
    pieces = text.split("/")
    if len(pieces) != 5 or pieces[4] != "aws4_request" or not pieces[0]:
        raise S3Error("AuthorizationHeaderMalformed",
                      "the credential must be ACCESS_KEY/DATE/REGION/SERVICE/aws4_request")
    return Credential(*pieces[:4])


def _parse_amz_date(text: str) -> float:
    match = _AMZ_DATE.match(text)
    if match is None:
        raise S3Error("AccessDenied", "X-Amz-Date must look like 20240101T000000Z")
    try:
        parsed = time.strptime(text, "%Y%m%dT%H%M%SZ")
    except ValueError:
        raise S3Error("AccessDenied", "X-Amz-Date is not a valid date") from None
    return float(calendar.timegm(parsed))


@dataclass(frozen=True)
class _Parts:
    credential: Credential
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    payload_hash: str
    presigned: bool
    expires: int = 0


def _header_parts(request: SignedRequest, authorization: str) -> _Parts:
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme != ALGORITHM:
        raise S3Error("InvalidRequest", f"unsupported authorization {scheme!r}: only "
                      f"{ALGORITHM} (SigV4) is accepted")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            fields[name.strip()] = value.strip()
    try:
        credential = _parse_credential(fields["Credential"])
        signed = tuple(fields["SignedHeaders"].lower().split(";"))
        signature = fields["Signature"]
    except KeyError as exc:
        raise S3Error("AuthorizationHeaderMalformed",
                      f"the Authorization header lacks {exc.args[0]}") from None
    amz_date = request.headers.get("x-amz-date", "")
    if not amz_date:
        raise S3Error("AccessDenied", "a signed request needs an X-Amz-Date header")
    payload = request.headers.get("x-amz-content-sha256", EMPTY_SHA256)
    return _Parts(credential, signed, signature, amz_date, payload, presigned=False)


def _query_parts(query: dict[str, str]) -> _Parts:
    if query.get("X-Amz-Algorithm") != ALGORITHM:
        raise S3Error("InvalidRequest",
                      f"a presigned URL must use X-Amz-Algorithm={ALGORITHM}")
    try:
        credential = _parse_credential(query["X-Amz-Credential"])
        signed = tuple(query["X-Amz-SignedHeaders"].lower().split(";"))
        signature = query["X-Amz-Signature"]
        amz_date = query["X-Amz-Date"]
        expires_text = query["X-Amz-Expires"]
    except KeyError as exc:
        raise S3Error("AuthorizationHeaderMalformed",
                      f"the presigned URL lacks {exc.args[0]}") from None
    if not expires_text.isdigit() or not 0 < int(expires_text) <= MAX_EXPIRES:
        raise S3Error("AuthorizationHeaderMalformed",
                      f"X-Amz-Expires must be 1 to {MAX_EXPIRES} seconds")
    return _Parts(credential, signed, signature, amz_date, "UNSIGNED-PAYLOAD",
                  presigned=True, expires=int(expires_text))


def is_signed(request: SignedRequest) -> bool:
    return ("authorization" in request.headers
            or "X-Amz-Signature" in dict(query_pairs(request.raw_query)))


def access_key_of(request: SignedRequest) -> str | None:
    """The access key a request names (SIMPLE mode's user), without checking anything."""
    try:
        return _parts(request, ())[0].credential.access_key
    except S3Error:
        return None


def _parts(request: SignedRequest,
           ignored: tuple[str, ...]) -> tuple[_Parts, list[tuple[str, str]]]:
    pairs = [(k, v) for k, v in query_pairs(request.raw_query) if k not in ignored]
    authorization = request.headers.get("authorization")
    if authorization:
        return _header_parts(request, authorization), pairs
    query = dict(pairs)
    if "X-Amz-Signature" in query:
        return _query_parts(query), [(k, v) for k, v in pairs if k != "X-Amz-Signature"]
    if "AWSAccessKeyId" in query:
        raise S3Error("InvalidRequest", "Signature Version 2 is not accepted: presign with "
                      "SigV4 (boto3: Config(signature_version='s3v4'))")
    raise S3Error("AccessDenied", "the request is not signed: sign it with an access key "
                  "of alluxio.worker.s3.credentials.file")


def canonical_request(request: SignedRequest, parts: _Parts, pairs: list[tuple[str, str]],
                      host: str | None) -> str:
    path = _uri_encode(unquote(request.raw_path) or "/", safe="/")
    query = "&".join(f"{n}={v}" for n, v in sorted(
        (_uri_encode(n, ""), _uri_encode(v, "")) for n, v in pairs))
    lines = []
    for name in parts.signed_headers:
        value = host if name == "host" and host is not None else request.headers.get(name)
        if value is None:
            raise S3Error("AccessDenied", f"the signed header {name!r} is missing")
        lines.append(f"{name}:{_SPACES.sub(' ', value.strip())}\n")
    return "\n".join([request.method, path, query, "".join(lines),
                      ";".join(parts.signed_headers), parts.payload_hash])


def signing_key(secret: str, credential: Credential) -> bytes:
    key = ("AWS4" + secret).encode()
    for piece in (credential.date, credential.region, credential.service, "aws4_request"):
        key = hmac.new(key, piece.encode(), hashlib.sha256).digest()
    return key


def verify(request: SignedRequest, secrets: Mapping[str, str], now: float, *,
           host: str | None = None, ignored_query: tuple[str, ...] = ()) -> str:
    """The access key of a correctly signed, current request; else ``S3Error``."""
    parts, pairs = _parts(request, ignored_query)
    credential = parts.credential
    secret = secrets.get(credential.access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId",
                      "the access key is not one of this cluster's S3 key pairs")
    if "host" not in parts.signed_headers:
        raise S3Error("AccessDenied", "the Host header must be signed")
    signed_at = _parse_amz_date(parts.amz_date)
    if credential.date != parts.amz_date[:8]:
        raise S3Error("AuthorizationHeaderMalformed",
                      "the credential's date differs from X-Amz-Date")
    if parts.presigned:
        if now > signed_at + parts.expires:
            raise S3Error("AccessDenied", "Request has expired")
        if signed_at > now + MAX_SKEW:
            raise S3Error("RequestTimeTooSkewed", "the presigned URL is dated in the future")
    elif abs(now - signed_at) > MAX_SKEW:
        raise S3Error("RequestTimeTooSkewed",
                      "The difference between the request time and the server's time is "
                      "too large (more than 15 minutes)")
    text = canonical_request(request, parts, pairs, host)
    to_sign = "\n".join([ALGORITHM, parts.amz_date, credential.scope,
                         hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()])
    expected = hmac.new(signing_key(secret, credential), to_sign.encode(),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), parts.signature.encode("ascii", "replace")):
        raise S3Error("SignatureDoesNotMatch",
                      "The request signature we calculated does not match the signature "
                      "you provided. Check your key and signing method.")
    return credential.access_key
