"""The hidden temp files a COPY or MOVE writes beside a local destination: their names,
and the sweep of those a killed worker left behind.

A destination file ``D`` is written to ``.{basename(D)}.alluxiojob-{worker}-{run}-{pid}-{n}``
in D's directory, fsynced, then renamed over ``D``:

- ``worker``: 8 hex digits kept in the worker's first cache dir (``worker-tag``), the same
  across its restarts. A cache dir is open in one worker process at a time (its index is
  locked), so a tag names one worker, on one host, and at most one running worker
  process.
- ``run``: 8 random hex digits drawn at each start of the worker process.
- ``pid``, ``n``: the process that named the file and a number unique in it.

A name too long for the file system (255 bytes) keeps only the start of ``basename(D)``.
While a temp file is written its writer holds an exclusive ``flock`` on it, which the
kernel drops when the writer dies, however it dies.

A worker killed outright (SIGKILL, power loss, out of memory) leaves its temp files
behind. Before a transfer writes into a directory, ``sweep`` removes there (once per
directory and process) the temp files provably left by a dead process of this same
worker:

- the name is exactly of the form above, and the entry is a regular file (not a
  symlink, which is never followed, nor anything else);
- its ``worker`` is this worker's: a file written by another worker, on this host or
  another one sharing the file system, is never touched, whatever its pid says;
- its ``run`` is an earlier one: the current process's own writes are never touched;
- its lock can be taken: no process of that run is still writing it (a pool process
  may outlive its killed worker for a while). Where locks cannot be taken at all, no
  file is ever removed.

A name of an older version (``.NAME.alluxiojob-PID-TASK``) is not of this form and is
kept. This module must stay cheap to import: pool processes load it.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import secrets
import stat
from dataclasses import dataclass

MARK = ".alluxiojob-"
NAME_MAX = 255
TAG_FILE = "worker-tag"

_HEX8 = re.compile(r"[0-9a-f]{8}")
# worker, run, pid, number; none of them can hold a dot, so the suffix is found from the end
_SUFFIX = re.compile(re.escape(MARK)
                     + r"([0-9a-f]{8})-([0-9a-f]{8})-([1-9][0-9]{0,9})-([0-9a-f]{1,16})\Z")
_numbers = itertools.count(1)


@dataclass(frozen=True)
class TmpOwner:
    """Whose temp files: a worker (``worker``) in one of its runs (``run``)."""

    worker: str
    run: str

    def __post_init__(self) -> None:
        if not (_HEX8.fullmatch(self.worker) and _HEX8.fullmatch(self.run)):
            raise ValueError(f"a temp file owner is two times 8 hex digits: {self!r}")

    @classmethod
    def new_run(cls, worker: str) -> TmpOwner:
        """This start of the worker tagged ``worker``."""
        return cls(worker, secrets.token_hex(4))

    @classmethod
    def anonymous(cls) -> TmpOwner:
        """A writer that is no worker: its temp files are never swept by anyone."""
        return cls(secrets.token_hex(4), secrets.token_hex(4))


_swept: set[tuple[str, TmpOwner]] = set()  # directories this process has swept


@dataclass(frozen=True)
class TmpName:
    owner: TmpOwner
    pid: int
    number: int

    @classmethod
    def new(cls, owner: TmpOwner) -> TmpName:
        """A name no other write of this process uses."""
        return cls(owner, os.getpid(), next(_numbers))

    def beside(self, final: str) -> str:
        """The temp file's path for destination ``final``: in the same directory."""
        head, tail = os.path.split(final)
        return os.path.join(head, _compose(tail, self))


def _compose(tail: str, name: TmpName) -> str:
    suffix = f"{MARK}{name.owner.worker}-{name.owner.run}-{name.pid}-{name.number:x}"
    full = f".{tail}{suffix}"
    if len(os.fsencode(full)) <= NAME_MAX:
        return full
    room = NAME_MAX - len(os.fsencode("." + suffix))
    return "." + os.fsdecode(os.fsencode(tail)[:room]) + suffix


def parse(name: str) -> TmpName | None:
    """The parts of a directory entry's name if it is exactly a temp file's, else None."""
    found = _SUFFIX.search(name)
    if found is None or found.start() < 2 or not name.startswith("."):
        return None
    worker, run, pid, number = found.groups()
    parsed = TmpName(TmpOwner(worker, run), int(pid), int(number, 16))
    # Exactly what ``beside`` makes: no leading zeros, no name too long.
    return parsed if _compose(name[1:found.start()], parsed) == name else None


def retarget(tmp: str, final: str) -> str:
    """The temp file ``tmp`` (one of these names) renamed for another destination."""
    parsed = parse(os.path.basename(tmp))
    if parsed is None:
        raise ValueError(f"not a temp file name: {tmp!r}")
    return parsed.beside(final)


def hold_lock(fd: int) -> None:
    """Writer: lock the temp file open at ``fd`` until it is closed, so that no sweep
    takes it for a dead writer's. A file system without locks: no lock, and no sweep will
    ever remove the file."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass


def sweep(directory: str, owner: TmpOwner) -> list[str]:
    """Blocking: remove the temp files in ``directory`` that dead processes of
    ``owner.worker`` left (see the module's doc), the first time this process writes
    there. Returns the removed paths; never raises."""
    key = (directory, owner)
    if key in _swept:
        return []
    try:
        with os.scandir(directory or ".") as entries:
            stale = []
            for entry in entries:
                parsed = parse(entry.name)
                if (parsed is not None and parsed.owner.worker == owner.worker
                        and parsed.owner.run != owner.run
                        and entry.is_file(follow_symlinks=False)):
                    stale.append(entry.path)
    except OSError:
        return []
    removed = [path for path in stale if _remove_if_dead(path)]
    if len(_swept) > 10_000:
        _swept.clear()
    _swept.add(key)
    return removed


def _remove_if_dead(path: str) -> bool:
    """Unlink ``path`` if it is a regular file whose lock no process holds. Opened
    read-only: taking the lock needs no more, and a name planted on someone else's file
    (a hard link) gets no write access to it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                     | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # its writer lives, or this file system cannot tell
        now = os.lstat(path)
        if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
            return False  # renamed or replaced meanwhile: not the file that was locked
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def worker_tag(cache_dir: str) -> str:
    """Blocking: the tag of the worker whose (first) cache dir is ``cache_dir``, made and
    stored there the first time. Call it only with the cache dir's index open (locked)."""
    path = os.path.join(cache_dir, TAG_FILE)
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            tag = f.read(64).strip()
        if _HEX8.fullmatch(tag):
            return tag
    except FileNotFoundError:
        pass
    tag = secrets.token_hex(4)
    fresh = path + ".new"
    with open(fresh, "w", encoding="ascii") as f:
        f.write(tag + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(fresh, path)
    return tag
