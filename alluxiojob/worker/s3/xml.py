"""The XML bodies of the listing and bucket operations, as S3 writes them.

With ``encoding-type=url`` every key, prefix and marker is percent-encoded (``/``
kept), which is how clients (botocore among them) read it back.
"""

from __future__ import annotations

import datetime
from urllib.parse import quote
from xml.sax.saxutils import escape

from alluxiojob.worker.s3.listing import Listing

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
OWNER = "<Owner><ID>alluxiojob</ID><DisplayName>alluxiojob</DisplayName></Owner>"


def iso_time(mtime_ns: int) -> str:
    moment = datetime.datetime.fromtimestamp(mtime_ns / 1e9, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _text(value: str, url: bool) -> str:
    return escape(quote(value, safe="/") if url else value)


def _element(name: str, value: str | int | bool) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{name}>{value}</{name}>"


def _contents(listing: Listing, url: bool, owner: bool) -> list[str]:
    out = []
    for obj in listing.objects:
        etag = escape('"' + obj.etag.strip('"') + '"' if obj.etag
                      else f'"{obj.mtime_ns:x}-{obj.size:x}"')
        out.append("<Contents>" + _element("Key", _text(obj.key, url))
                   + _element("LastModified", iso_time(obj.mtime_ns))
                   + _element("ETag", etag) + _element("Size", obj.size)
                   + (OWNER if owner else "")
                   + "<StorageClass>STANDARD</StorageClass></Contents>")
    out.extend("<CommonPrefixes>" + _element("Prefix", _text(p, url)) + "</CommonPrefixes>"
               for p in listing.prefixes)
    return out


def list_objects_v2(bucket: str, listing: Listing, *, prefix: str, delimiter: str,
                    max_keys: int, url: bool, start_after: str, token: str,
                    next_token: str, owner: bool) -> bytes:
    parts = [HEAD, f'<ListBucketResult xmlns="{NS}">', _element("Name", escape(bucket)),
             _element("Prefix", _text(prefix, url)), _element("KeyCount",
                                                              len(listing.objects)
                                                              + len(listing.prefixes)),
             _element("MaxKeys", max_keys), _element("IsTruncated", listing.truncated)]
    if delimiter:
        parts.append(_element("Delimiter", _text(delimiter, url)))
    if url:
        parts.append(_element("EncodingType", "url"))
    if start_after:
        parts.append(_element("StartAfter", _text(start_after, url)))
    if token:
        parts.append(_element("ContinuationToken", escape(token)))
    if listing.truncated:
        parts.append(_element("NextContinuationToken", escape(next_token)))
    parts += _contents(listing, url, owner)
    parts.append("</ListBucketResult>")
    return "".join(parts).encode()


def list_objects_v1(bucket: str, listing: Listing, *, prefix: str, delimiter: str,
                    max_keys: int, url: bool, marker: str) -> bytes:
    parts = [HEAD, f'<ListBucketResult xmlns="{NS}">', _element("Name", escape(bucket)),
             _element("Prefix", _text(prefix, url)), _element("Marker", _text(marker, url)),
             _element("MaxKeys", max_keys), _element("IsTruncated", listing.truncated)]
    if delimiter:
        parts.append(_element("Delimiter", _text(delimiter, url)))
    if url:
        parts.append(_element("EncodingType", "url"))
    if listing.truncated:
        parts.append(_element("NextMarker", _text(listing.last, url)))
    parts += _contents(listing, url, owner=True)
    parts.append("</ListBucketResult>")
    return "".join(parts).encode()


def list_buckets(names: list[str]) -> bytes:
    created = iso_time(0)
    buckets = "".join("<Bucket>" + _element("Name", escape(n))
                      + _element("CreationDate", created) + "</Bucket>" for n in names)
    return (f'{HEAD}<ListAllMyBucketsResult xmlns="{NS}">{OWNER}'
            f"<Buckets>{buckets}</Buckets></ListAllMyBucketsResult>").encode()


def bucket_location(region: str) -> bytes:
    # us-east-1 is an empty LocationConstraint, as S3 answers it
    value = "" if region == "us-east-1" else escape(region)
    return f'{HEAD}<LocationConstraint xmlns="{NS}">{value}</LocationConstraint>'.encode()
