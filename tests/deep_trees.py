"""Directory chains deeper than Python's recursion limit and than PATH_MAX, made and
removed one level at a time (``shutil.rmtree``, which pytest uses for its temp dirs,
recurses and fails on them, so each test removes its own)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_DIR = os.O_RDONLY | os.O_DIRECTORY


def make_chain(root: Path, depth: int, name: str = "d") -> None:
    """``depth`` nested directories under ``root`` with a file ``leaf`` at the bottom."""
    fd = os.open(root, _DIR)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, _DIR, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"deep")
        os.close(leaf)
    finally:
        os.close(fd)


def remove_tree(top: Path) -> None:
    """Remove ``top`` and everything under it, however deep, holding at most ~100 fds:
    deeper parts are moved up under ``top`` and removed from there."""
    while os.path.lexists(top):
        fds = [os.open(top, _DIR)]
        names: list[str] = []
        try:
            while True:
                sub = None
                with os.scandir(fds[-1]) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            sub = entry.name
                            break
                        os.unlink(entry.name, dir_fd=fds[-1])
                if sub is None:  # the deepest open directory is empty now
                    break
                if len(fds) >= 100:
                    os.rename(sub, f".up-{secrets.token_hex(8)}", src_dir_fd=fds[-1],
                              dst_dir_fd=fds[0])
                    continue
                fds.append(os.open(sub, _DIR, dir_fd=fds[-1]))
                names.append(sub)
            if names:
                os.close(fds.pop())
                os.rmdir(names[-1], dir_fd=fds[-1])
            else:
                os.close(fds.pop())
                os.rmdir(top)
        finally:
            for fd in fds:
                os.close(fd)


@contextmanager
def removed_after(*paths: Path) -> Iterator[None]:
    try:
        yield
    finally:
        for path in paths:
            remove_tree(path)
