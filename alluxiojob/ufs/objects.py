"""Object stores as a UFS: ``s3://``, ``gs://`` and ``az://`` through obstore (Rust object_store).

URIs are ``scheme://bucket/key``, taken as written (not percent-encoded), like local
paths. A job on ``s3://b/p`` covers the object ``p`` itself, if there is one, and every
key under ``p/``; keys are listed in byte order, which is the order of the one-element
``parts`` tuple ``(key relative to p,)``. Directory markers (keys ending in ``/``) are
not objects and are never listed.

All calls here are blocking (obstore's sync API): the coordinator calls them through
``trio.to_thread``, workers from threads inside their pool processes. One store handle
per bucket is built on first use and reused by the whole process.

object_store cannot address a key with an empty, ``.`` or ``..`` segment or a control
character; such a key fails with ``INVALID_PATH`` naming it (at listing, the whole
listing, since the client cannot list past it: list a narrower path).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import obstore
from obstore import exceptions as obs_errors

from alluxiojob.core.reasons import Reason
from alluxiojob.ufs.base import READ_CHUNK, UfsError, UfsFile, UfsStat
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.ufs.uploads import UploadJournal, abort_stale
from alluxiojob.ufs.uri import UfsUri, parse_uri

if TYPE_CHECKING:
    from obstore import GetOptions
    from obstore.store import AzureConfig, ClientConfig, RetryConfig, S3Config

OBJECT_SCHEMES = ("s3", "gs", "az")
MULTIPART_THRESHOLD = 16 * 1024 * 1024  # smaller objects are one PUT
MULTIPART_PART = 8 * 1024 * 1024
LIST_PAGE = 1000
CONNECT_TIMEOUT = "10s"
REQUEST_TIMEOUT = "10min"  # one request, body included: a whole partition streams in it
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_BAD_SEGMENT = re.compile(r'(?:Error parsing Path|Path) "(.*)"(?:: Encountered| contained)')
_STATUS = re.compile(r"status code: (\d{3})")
_XML_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<\n]{1,300})")
_MISSING_BUCKET = ("NoSuchBucket", "ContainerNotFound")


def split_uri(uri: str | UfsUri) -> tuple[str, str, str]:
    """``s3://bucket/a/b`` → ``("s3", "bucket", "a/b")``; raises ``INVALID_PATH``."""
    parsed = uri if isinstance(uri, UfsUri) else parse_uri(uri)
    if parsed.scheme not in OBJECT_SCHEMES:
        raise UfsError(Reason.INVALID_PATH, f"not an object-store URI: {parsed.text!r}")
    if not _BUCKET.match(parsed.bucket):
        raise UfsError(Reason.INVALID_PATH,
                       f"bad bucket name {parsed.bucket!r} in {parsed.text!r}")
    return parsed.scheme, parsed.bucket, parsed.key


def check_key(key: str, uri: str) -> None:
    """Keys object_store cannot address fail by name instead of reaching another key."""
    if not key:
        return
    segments = key.split("/")
    if any(s in ("", ".", "..") for s in segments) or any(ord(c) < 32 or c == "\x7f"
                                                          for c in key):
        raise UfsError(Reason.INVALID_PATH,
                       f"the key {key!r} of {uri} has an empty, '.' or '..' segment or a "
                       "control character, which the object-store client cannot address")


def _mtime_ns(value: datetime | None) -> int:
    return int(value.timestamp() * 1_000_000_000) if value is not None else 0


class ObjectStoreUfs:
    """One scheme's buckets, with one store handle per bucket for the whole process."""

    def __init__(self, scheme: str, settings: UfsSettings) -> None:
        self.scheme = scheme
        self.settings = settings
        self._stores: dict[str, Any] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ stores
    def store(self, bucket: str) -> Any:
        with self._lock:
            store = self._stores.get(bucket)
            if store is None:
                store = self._stores[bucket] = self._build(bucket)
            return store

    def _build(self, bucket: str) -> Any:
        s = self.settings
        retry: RetryConfig = {"max_retries": s.max_retries, "retry_timeout": timedelta(minutes=3),
                 "backoff": {"init_backoff": timedelta(milliseconds=100),
                             "max_backoff": timedelta(seconds=15), "base": 2}}
        client: ClientConfig = {"connect_timeout": CONNECT_TIMEOUT,
                                  "timeout": REQUEST_TIMEOUT}
        try:
            if self.scheme == "s3":
                from obstore.store import S3Store

                config: S3Config = {}
                if s.s3_endpoint:
                    endpoint = s.s3_endpoint.rstrip("/")
                    if not s.s3_path_style:  # virtual-hosted: the bucket is in the host
                        proto, _, host = endpoint.partition("://")
                        endpoint = f"{proto}://{bucket}.{host}"
                    config["endpoint"] = endpoint
                    client["allow_http"] = endpoint.startswith("http://")
                config["virtual_hosted_style_request"] = not s.s3_path_style
                if s.s3_region:
                    config["region"] = s.s3_region
                if s.s3_access_key or s.s3_secret_key:
                    config["access_key_id"] = s.s3_access_key
                    config["secret_access_key"] = s.s3_secret_key
                return S3Store(bucket, config=config, client_options=client,
                               retry_config=retry)
            if self.scheme == "gs":
                from obstore.store import GCSStore

                return GCSStore(bucket, client_options=client, retry_config=retry)
            from obstore.store import AzureStore

            azure: AzureConfig = {}
            if s.azure_account:
                azure["account_name"] = s.azure_account
            if s.azure_key:
                azure["account_key"] = s.azure_key
            if s.azure_endpoint:
                azure["endpoint"] = s.azure_endpoint
                client["allow_http"] = s.azure_endpoint.lower().startswith("http://")
            return AzureStore(bucket, config=azure, client_options=client, retry_config=retry)
        except (obs_errors.BaseError, ValueError) as exc:
            hint = ""
            if self.scheme == "az" and not s.azure_account:
                hint = (" (set alluxio.underfs.azure.account.name, or a key "
                        "fs.azure.account.key.<account>.blob.core.windows.net)")
            raise UfsError(Reason.INVALID_PATH, f"cannot set up {self.scheme}://{bucket}: "
                           f"{self._message(exc)}{hint}") from None

    # ------------------------------------------------------------------ errors
    @property
    def bucket_noun(self) -> str:
        return "container" if self.scheme == "az" else "bucket"

    def _message(self, exc: BaseException) -> str:
        """The first line of a client error, secrets scrubbed, bounded. An XML error body
        the server sent (S3's, Azure's) is shown as its code and message."""
        full = str(exc).strip()
        text = full.splitlines()[0] if full else type(exc).__name__
        head, xml, _ = text.partition("<?xml")
        if xml:
            code, said = _XML_CODE.search(full), _XML_MESSAGE.search(full)
            text = head.rstrip() + " " + ": ".join(
                m.group(1).strip() for m in (code, said) if m is not None)
        return self.settings.redact(text.strip())[:400]

    def error(self, exc: BaseException, uri: str, doing: str) -> UfsError:
        """Map a client error to the shared reasons; the message names ``uri``."""
        full = str(exc)
        match = _STATUS.search(full)
        status = int(match.group(1)) if match else 0
        message = f"{doing} {uri}: {self._message(exc)}"
        if isinstance(exc, obs_errors.PreconditionError) or status == 412:
            return UfsError(Reason.UFS_CHANGED, f"{uri} changed while it was read (ETag no longer "
                            "matches); it will be retried")
        if isinstance(exc, FileNotFoundError | obs_errors.NotFoundError) or status == 404:
            if any(code in full for code in _MISSING_BUCKET):
                _, bucket, _ = split_uri(uri)
                return UfsError(Reason.UFS_NOT_FOUND, f"{self.bucket_noun} {bucket!r} does not "
                                f"exist ({self.scheme}://{bucket})")
            return UfsError(Reason.UFS_NOT_FOUND, message)
        if (isinstance(exc, PermissionError | obs_errors.PermissionDeniedError
                       | obs_errors.UnauthenticatedError) or status in (401, 403)):
            _, bucket, _ = split_uri(uri)
            return UfsError(Reason.PERMISSION_DENIED, f"{message} (access to {self.bucket_noun} "
                            f"{bucket!r} refused: check its credentials and permissions)")
        if status in (429, 503) or "SlowDown" in full or "Throttl" in full:
            return UfsError(Reason.UFS_THROTTLED, f"{message} (still throttled after "
                            f"{self.settings.max_retries} retries)")
        if isinstance(exc, obs_errors.AlreadyExistsError):
            return UfsError(Reason.EXISTS, f"{uri} exists; use --overwrite")
        if isinstance(exc, obs_errors.InvalidPathError | ValueError):
            bad = _BAD_SEGMENT.search(full)
            key = bad.group(1) if bad else "?"
            return UfsError(Reason.INVALID_PATH, f"{doing} {uri}: the key {key!r} has an empty, "
                            "'.' or '..' segment or a control character, which the "
                            "object-store client cannot address; use a narrower path")
        return UfsError(Reason.IO_ERROR, message)

    # ------------------------------------------------------------------ protocol
    def normalize(self, path: str | UfsUri) -> str:
        scheme, bucket, key = split_uri(path)
        key = key.strip("/")
        uri = f"{scheme}://{bucket}" + (f"/{key}" if key else "")
        check_key(key, uri)
        return uri

    def _locate(self, uri: str) -> tuple[Any, str]:
        _, bucket, key = split_uri(uri)
        check_key(key, uri)
        return self.store(bucket), key

    def exists(self, uri: str) -> bool:
        """The object ``uri``, or any key under ``uri/`` (the bucket, for a bucket root)."""
        store, key = self._locate(uri)
        try:
            if key and self.is_object(store, key):
                return True
            for batch in obstore.list(store, prefix=key or None, chunk_size=1):
                return bool(batch) or not key
        except Exception as exc:
            raise self.error(exc, uri, "cannot list") from None
        return not key  # an empty bucket exists: listing it did not fail

    def walk(self, uri: str, after: tuple[str, ...] = (),
             follow_link: Callable[[str], bool] | None = None) -> Iterator[UfsFile]:
        """The object ``uri`` itself, then the keys under ``uri/`` in byte order.

        object_store lists a directory marker ``d/`` as ``d`` (it strips the slash). A
        marker is recognised because its stripped name breaks the byte order, repeats a
        name already listed, or, when empty, is not an object at all (HEAD says 404).
        """
        store, key = self._locate(uri)
        _, bucket, _ = split_uri(uri)
        base = f"{self.scheme}://{bucket}/"
        if key and not after:
            try:
                root = self.stat(uri)
                yield UfsFile(uri, (), root.length, root.mtime_ns, root.version)
            except UfsError as exc:
                if exc.reason is not Reason.UFS_NOT_FOUND:
                    raise
        offset = (f"{key}/{after[0]}" if key else after[0]) if after else None
        skip = len(key) + 1 if key else 0
        previous = offset or ""
        recent: set[str] = set()  # names a stripped marker could still repeat
        try:
            for batch in obstore.list(store, prefix=key or None, offset=offset,
                                      chunk_size=LIST_PAGE):
                for meta in batch:
                    path = meta["path"]
                    if path == key or path < previous or path in recent:
                        continue  # a directory marker
                    if meta["size"] == 0 and not self.is_object(store, path):
                        continue  # an empty directory marker
                    recent = {p for p in recent if p + "/" > path}
                    recent.add(path)
                    previous = path
                    yield UfsFile(base + path, (path[skip:],), meta["size"],
                                  _mtime_ns(meta["last_modified"]), meta["e_tag"] or "")
        except UfsError:
            raise
        except Exception as exc:
            raise self.error(exc, uri, "cannot list") from None

    def is_object(self, store: Any, key: str) -> bool:
        try:
            obstore.head(store, key)
            return True
        except (FileNotFoundError, obs_errors.NotFoundError):
            return False

    def stat(self, uri: str) -> UfsStat:
        store, key = self._locate(uri)
        try:
            meta = obstore.head(store, key)
        except Exception as exc:
            raise self.error(exc, uri, "cannot read") from None
        return UfsStat(meta["size"], _mtime_ns(meta["last_modified"]), meta["e_tag"] or "")

    def open(self, uri: str, offset: int = 0, length: int = -1,
             version: str = "") -> tuple[UfsStat, Iterator[bytes]]:
        """One GET: what the object is, and its bytes as a stream of bounded chunks."""
        store, key = self._locate(uri)
        options: GetOptions = {}
        if length > 0:
            options["range"] = (offset, offset + length)
        elif offset:
            options["range"] = {"offset": offset}
        if version:
            options["if_match"] = version
        try:
            result = obstore.get(store, key, options=options or None)
            meta = result.meta
        except Exception as exc:
            raise self.error(exc, uri, "cannot read") from None
        info = UfsStat(meta["size"], _mtime_ns(meta["last_modified"]), meta["e_tag"] or "")
        if version and info.version != version:
            raise UfsError(Reason.UFS_CHANGED,
                           f"{uri} changed while it was read; it will be retried")
        start, end = result.range
        if end - start <= READ_CHUNK:  # small: one buffer, no stream machinery
            try:
                # obstore's Bytes is a zero-copy buffer: file writes take it as is.
                return info, iter((cast(bytes, result.bytes()),))
            except Exception as exc:
                raise self.error(exc, uri, "cannot read") from None
        return info, self._chunks(result, uri)

    def _chunks(self, result: Any, uri: str) -> Iterator[bytes]:
        try:
            yield from result.stream(min_chunk_size=READ_CHUNK)
        except Exception as exc:
            raise self.error(exc, uri, "cannot read") from None

    def read(self, uri: str, offset: int = 0, length: int = -1,
             version: str = "") -> Iterator[bytes]:
        if length == 0:
            return
        info, chunks = self.open(uri, offset, length, version)
        want = (info.length - offset) if length < 0 else length
        got = 0
        for chunk in chunks:
            got += len(chunk)
            yield chunk
        if got != want:
            raise UfsError(Reason.UFS_CHANGED, f"{uri} gave {got} bytes, not {want}; it changed "
                           "while it was read")

    def write(self, uri: str, chunks: Iterable[bytes], length: int,
              overwrite: bool, uploads: UploadJournal | None = None) -> UfsStat:
        """One PUT, or a multipart upload completed at the end: the object appears whole.

        S3: what earlier, killed attempts at the same key left (``uploads`` module) is
        aborted first, and ``uploads`` records the upload until it ends."""
        store, key = self._locate(uri)
        if not key:
            raise UfsError(Reason.INVALID_PATH, f"cannot write a bucket root: {uri}")
        if not overwrite:
            try:
                obstore.head(store, key)
                raise UfsError(Reason.EXISTS, f"{uri} exists; use --overwrite")
            except UfsError:
                raise
            except Exception as exc:
                error = self.error(exc, uri, "cannot check")
                if error.reason is not Reason.UFS_NOT_FOUND:
                    raise error from None
        counted = _Counted(chunks)
        multipart = length > MULTIPART_THRESHOLD
        journal: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if multipart and self.scheme == "s3":
            _, bucket, _ = split_uri(uri)
            abort_stale(self.settings, bucket, key, datetime.now(UTC))
            if uploads is not None:
                journal = uploads.upload(bucket, key)
        try:
            with journal:
                obstore.put(store, key, counted if multipart else counted.collect(),
                            use_multipart=multipart, chunk_size=MULTIPART_PART,
                            max_concurrency=4)
        except UfsError:
            raise
        except Exception as exc:
            raise self.error(exc, uri, "cannot write") from None
        if counted.count != length:
            # A source that changed size: do not leave a wrong object behind.
            self.delete(uri)
            raise UfsError(Reason.UFS_CHANGED, f"the source of {uri} gave {counted.count} bytes, "
                           f"not {length}")
        written = self.stat(uri)
        if written.length != length:
            raise UfsError(Reason.IO_ERROR, f"{uri} holds {written.length} bytes after writing "
                           f"{length}")
        return written

    def delete(self, uri: str) -> None:
        store, key = self._locate(uri)
        try:
            obstore.delete(store, key)
        except Exception as exc:
            error = self.error(exc, uri, "cannot remove")
            if error.reason is not Reason.UFS_NOT_FOUND:
                raise error from None


class _Counted:
    """An iterator of chunks that counts what went through it."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self.count = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        chunk = next(self._chunks)
        self.count += len(chunk)
        return chunk

    def collect(self) -> bytes:
        return b"".join(self)
