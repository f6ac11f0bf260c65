"""One URI of an under file system, parsed once. Pure: no I/O.

On the wire a URI stays a string. ``parse_uri`` is the one place that takes it apart:
a plain absolute path or ``file://`` is local (``file://localhost/`` too; another host
is not supported); anything else is ``scheme://bucket/key``. The worker parses each
file's URI once where a task's rows are decoded and carries the ``UfsUri`` from there.
"""

from __future__ import annotations

from dataclasses import dataclass

from alluxiojob.core.reasons import Reason
from alluxiojob.ufs.errors import UfsError

_FILE = "file://"


@dataclass(frozen=True, slots=True)
class UfsUri:
    text: str  # as given, as it travels on the wire
    scheme: str  # "file", an object store's scheme (lowercase), or "" when none
    bucket: str  # an object's bucket or container; "" for a local file
    key: str  # an object's key; for a local file, its local path ("" when not local)
    problem: str = ""  # a file URI naming another host: why it has no local path

    @property
    def local(self) -> bool:
        return self.scheme == "file"

    @property
    def local_path(self) -> str:
        """The local path of a local URI; ``UfsError(INVALID_PATH)`` for a remote host."""
        if self.problem:
            raise UfsError(Reason.INVALID_PATH, self.problem)
        return self.key


def parse_uri(text: str) -> UfsUri:
    """``text`` taken apart (never raises: what cannot be used says so when used)."""
    if text.startswith("/"):
        return UfsUri(text, "file", "", text)
    if text.startswith(_FILE):
        rest = text[len(_FILE):]
        if rest.startswith("localhost/"):
            rest = rest[len("localhost"):]
        if not rest.startswith("/"):
            return UfsUri(text, "file", "", "",
                          f"file URI with a remote host is not supported: {text}")
        return UfsUri(text, "file", "", rest)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return UfsUri(text, "", "", text)
    if scheme.lower() == "file":  # "FILE://...": kept whole, as it always was
        return UfsUri(text, "file", "", text)
    bucket, _, key = rest.partition("/")
    return UfsUri(text, scheme.lower(), bucket, key)


def to_local_path(uri: str) -> str:
    """``file:///a/b`` → ``/a/b``; a plain absolute path is returned as is.

    File URIs here are not percent-encoded: a name may hold ``%``, ``?`` or ``#``.
    """
    return parse_uri(uri).local_path
