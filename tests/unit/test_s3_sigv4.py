"""SigV4 verification against requests signed by botocore's own signer."""

from __future__ import annotations

import datetime
import time
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from alluxiojob.worker.s3 import sigv4
from alluxiojob.worker.s3.errors import S3Error

SECRETS = {"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


def _signed(url: str, *, secret: str = SECRETS["AKIDEXAMPLE"], presign: int = 0,
            headers: dict[str, str] | None = None) -> sigv4.SignedRequest:
    request = AWSRequest("GET", url, headers=headers or {})
    creds = Credentials("AKIDEXAMPLE", secret)
    auth = S3SigV4QueryAuth(creds, "s3", "us-east-1", expires=presign) if presign \
        else S3SigV4Auth(creds, "s3", "us-east-1")
    auth.add_auth(request)
    parts = urlsplit(request.url)
    sent = {k.lower(): v for k, v in request.headers.items()}
    sent["host"] = parts.netloc
    return sigv4.SignedRequest("GET", parts.path, parts.query, sent)


URL = "http://127.0.0.1:29998/data/odd%20names/a%20b%2Bc.txt?list-type=2&prefix=a%2Fb"


def test_header_and_presigned_signatures_verify() -> None:
    now = time.time()
    assert sigv4.verify(_signed(URL), SECRETS, now) == "AKIDEXAMPLE"
    assert sigv4.verify(_signed(URL, presign=60), SECRETS, now) == "AKIDEXAMPLE"
    ranged = _signed(URL, headers={"Range": "bytes=0-9"})
    assert sigv4.verify(ranged, SECRETS, now) == "AKIDEXAMPLE"


@pytest.mark.parametrize(("change", "code"), [
    ("secret", "SignatureDoesNotMatch"),
    ("key", "InvalidAccessKeyId"),
    ("path", "SignatureDoesNotMatch"),
    ("query", "SignatureDoesNotMatch"),
    ("host", "SignatureDoesNotMatch"),
    ("late", "RequestTimeTooSkewed"),
    ("early", "RequestTimeTooSkewed"),
    ("unsigned", "AccessDenied"),
])
def test_tampered_or_stale_requests_are_refused(change: str, code: str) -> None:
    now = time.time()
    request = _signed(URL, secret="wrong" if change == "secret" else SECRETS["AKIDEXAMPLE"])
    secrets = {"OTHER": "x"} if change == "key" else SECRETS
    if change == "path":
        request = sigv4.SignedRequest("GET", "/data/other", request.raw_query, request.headers)
    elif change == "query":
        request = sigv4.SignedRequest("GET", request.raw_path, request.raw_query + "&x=1",
                                      request.headers)
    elif change == "host":
        request = sigv4.SignedRequest("GET", request.raw_path, request.raw_query,
                                      {**request.headers, "host": "127.0.0.1:1"})
    elif change == "unsigned":
        request = sigv4.SignedRequest("GET", request.raw_path, request.raw_query,
                                      {"host": "127.0.0.1:29998"})
    offset = {"late": 16 * 60, "early": -16 * 60}.get(change, 0)
    with pytest.raises(S3Error) as error:
        sigv4.verify(request, secrets, now + offset)
    assert error.value.code == code
    assert SECRETS["AKIDEXAMPLE"] not in error.value.message


def test_presigned_urls_expire() -> None:
    request = _signed(URL, presign=30)
    sigv4.verify(request, SECRETS, time.time() + 20)
    with pytest.raises(S3Error) as error:
        sigv4.verify(request, SECRETS, time.time() + 31)
    assert error.value.code == "AccessDenied"
    assert "expired" in error.value.message


def test_a_redirect_marker_and_the_original_host_verify() -> None:
    request = _signed(URL)
    moved = sigv4.SignedRequest(
        "GET", request.raw_path, request.raw_query + "&x-alluxiojob-from=127.0.0.1%3A29998",
        {**request.headers, "host": "127.0.0.2:29998"})
    with pytest.raises(S3Error):
        sigv4.verify(moved, SECRETS, time.time())
    assert sigv4.verify(moved, SECRETS, time.time(), host="127.0.0.1:29998",
                        ignored_query=("x-alluxiojob-from",)) == "AKIDEXAMPLE"


def test_amz_dates_are_parsed_strictly() -> None:
    stamp = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC).timestamp()
    assert sigv4._parse_amz_date("20240102T030405Z") == stamp
    for bad in ("2024-01-02T03:04:05Z", "20241302T030405Z", ""):
        with pytest.raises(S3Error):
            sigv4._parse_amz_date(bad)
