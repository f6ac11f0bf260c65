"""No COPY or MOVE may destroy data: not onto itself, not through a second name for the
same file, and not when killed half way."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

from alluxiojob.core.reasons import Reason
from alluxiojob.protocol.codec import (
    FileEntry,
    FileStatus,
    Hello,
    TaskBatch,
    TaskOp,
    TaskResult,
    Welcome,
    decode,
    encode,
)
from tests.integration.cluster import SETTLED_STATES, Cluster, make_tree, sha256, wait_for

pytestmark = pytest.mark.timeout(300)


def _digest_if_there(path: Path) -> str | None:
    try:
        return sha256(path)
    except FileNotFoundError:
        return None


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256(p) for p in root.rglob("*")
            if p.is_file() and not p.is_symlink()}


def test_move_onto_a_symlink_to_its_source_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 40)
    before = _digests(src)
    link = tmp_path / "dst"
    os.symlink(src, link)  # the case that deleted every source file
    os.link(next(p for p in src.rglob("*") if p.is_file()), tmp_path / "hard")
    one = next(p for p in src.rglob("*") if p.is_file() and os.stat(p).st_nlink == 2)
    cases = {
        "a symlink to the source": (src, link),
        "inside a symlink to the source": (src, link / "deeper"),
        "the source itself": (src, src),
        "a parent of the source": (src, tmp_path),
        "inside the source after ..": (src, tmp_path / "elsewhere" / ".." / "src" / "x"),
        "a hard link of the file": (one, tmp_path / "hard"),
    }
    for job_type in ("move", "copy"):
        for name, (path, dst) in cases.items():
            answer = cluster.api("POST", f"/api/v1/master/submit_job/{job_type}",
                                 json={"path": str(path), "dst": str(dst)})
            assert answer.status_code == 400, (job_type, name, answer.text)
            assert answer.json()["error"] == "INVALID_PATH", (job_type, name)
            assert "nothing was submitted" in answer.json()["message"]
    refused = cluster.cli("job", "move", "--src", str(src), "--dst", str(link), "--wait",
                          check=False)
    assert refused.returncode == 2, refused.stderr
    assert "is or lies inside the source" in refused.stderr
    assert cluster.cli("job", "list", "--format", "JSON").stdout.count('"id"') == 0
    assert _digests(src) == before, "every source file is intact"


def test_move_never_removes_a_source_through_a_second_name(cluster: Cluster,
                                                           tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src / "sub", 12)
    (src / "top.bin").write_bytes(os.urandom(3000))
    (src / "linked.bin").write_bytes(os.urandom(3000))
    before = _digests(src)
    dst = tmp_path / "dst"
    dst.mkdir()
    os.symlink(src / "sub", dst / "sub")  # dst/sub/* are the source files themselves
    os.link(src / "linked.bin", dst / "linked.bin")  # one inode, two names

    for extra in ((), ("--overwrite",)):
        result = cluster.cli("job", "move", "--src", str(src), "--dst", str(dst), "--wait",
                             *extra, check=False)
        assert result.returncode == 4, result.stdout + result.stderr  # FAILED, by name
        for rel, digest in before.items():
            if rel == "top.bin":
                continue
            assert (src / rel).is_file(), f"{rel} was removed"
            assert sha256(src / rel) == digest, f"{rel} was changed"
        report = cluster.cli("job", "move", "--src", str(src), "--dst", str(dst), "--progress",
                             "--format", "JSON", "--file-status", "FAILURE")
        assert '"INVALID_PATH"' in report.stdout
        assert "under another name" in report.stdout
    assert sha256(dst / "top.bin") == before["top.bin"]
    assert not (src / "top.bin").exists(), "a file with no second name still moves"
    assert not list(dst.rglob(".*alluxiojob-*")), "no temporary files are left behind"


def _pool_processes(worker_pid: int) -> list[int]:
    done = subprocess.run(["pgrep", "-P", str(worker_pid)], capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split()]


def test_move_killed_repeatedly_loses_no_file(cluster: Cluster, tmp_path: Path) -> None:
    """SIGKILL a pool process and the worker itself while a MOVE runs: at every moment
    each file is whole in the source or in the destination, and a rerun finishes."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, 1500, big_size=3_000_000)
    before = _digests(src)

    def nothing_lost() -> None:
        for rel, digest in before.items():
            # Source first: a MOVE renames into place before it unlinks the source, so a
            # source found missing here has its destination in place by the next line.
            # The MOVE goes on meanwhile: the source may go between any two calls.
            if _digest_if_there(src / rel) == digest:
                continue
            assert (dst / rel).is_file(), f"{rel} is in neither place"
            assert sha256(dst / rel) == digest, f"{rel} is damaged in the destination"

    def moved() -> int:
        return sum(1 for p in dst.rglob("*") if p.is_file() and not p.name.startswith("."))

    answer = cluster.api("POST", "/api/v1/master/submit_job/move",
                         json={"path": str(src), "dst": str(dst), "options": {"batch_size": 20}})
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["id"]
    kills = 0
    for target in ("pool", "worker", "pool", "worker"):
        progressed = moved() + 100
        if progressed >= len(before):
            break
        wait_for(lambda p=progressed: moved() >= p, 120, "the MOVE to make progress")
        worker = cluster.workers[kills % len(cluster.workers)]
        assert worker.proc is not None
        if target == "pool":
            for pid in _pool_processes(worker.proc.pid):
                os.kill(pid, signal.SIGKILL)
        else:
            worker.kill()
        kills += 1
        nothing_lost()
        if target == "worker":
            worker.start()

    def finished() -> str | None:
        state = cluster.progress(job_id)["job"]["state"]
        return state if state in SETTLED_STATES else None

    wait_for(finished, 240, "the MOVE to finish", interval=0.2)
    nothing_lost()
    # Whatever ran out of retries while workers were down, a rerun finishes.
    cluster.cli("job", "move", "--src", str(src), "--dst", str(dst), "--wait", timeout=240)
    nothing_lost()
    # A kill before the rename may leave the hidden tmp file of that attempt behind (the
    # source is intact then, and the rerun copies it again): debris, not data.
    debris = {rel for rel in _digests(dst) if ".alluxiojob-" in rel}
    assert {rel: d for rel, d in _digests(dst).items() if rel not in debris} == before
    assert not [p for p in src.rglob("*") if p.is_file()], "every source was removed"
    print(f"killed {kills} times; every file was whole somewhere at each kill; "
          f"{len(debris)} tmp files left by killed attempts")


async def run_tasks(cluster: Cluster, *batches: TaskBatch) -> list[TaskResult]:
    """Send tasks to the first worker as a coordinator does, one after the other."""
    url = f"ws://127.0.0.1:{cluster.workers[0].rpc_port}/"  # type: ignore[attr-defined]
    answers = []
    async with open_websocket_url(url) as ws:
        await ws.send_message(encode(Hello("", "test")))
        assert isinstance(decode(await ws.get_message()), Welcome)
        for batch in batches:
            await ws.send_message(encode(batch))
            answer = decode(await ws.get_message())
            assert isinstance(answer, TaskResult), answer
            answers.append(answer)
    return answers


# trio-websocket's client side now and then leaves a socket for the GC when the server
# hangs up first; that is the test client, not the worker under test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_move_sent_again_after_it_moved_counts_its_files_as_moved(
        cluster: Cluster, tmp_path: Path) -> None:
    """A MOVE whose answer was lost (its worker killed, the coordinator paused) is sent
    again: its sources are gone, but their verified copies are in place, so the files
    are done. A file in neither place, or with a destination that is not its copy,
    still fails as not found."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    entries = []
    for name, data in (("a.bin", b"a" * 1000), ("b.bin", b"bb" * 300), ("c.bin", b"c" * 7)):
        (src / name).write_bytes(data)
        info = (src / name).stat()
        entries.append(FileEntry(f"file://{src / name}", info.st_size, info.st_mtime_ns,
                                 f"file://{dst / name}"))
    missing = FileEntry(f"file://{src / 'gone.bin'}", 5, 1, f"file://{dst / 'gone.bin'}")
    task = (*entries, missing)
    with trio.fail_after(60):
        first, again = await run_tasks(cluster, TaskBatch(1, "job", TaskOp.MOVE, task),
                                        TaskBatch(2, "job", TaskOp.MOVE, task))
    assert [r.status for r in first.results] == [FileStatus.OK] * 3 + [FileStatus.FAILED]
    assert [r.status for r in again.results] == [FileStatus.OK] * 3 + [FileStatus.FAILED]
    assert [r.bytes for r in again.results[:3]] == [1000, 600, 7]
    assert again.results[3].reason is Reason.UFS_NOT_FOUND
    assert sorted(p.name for p in dst.iterdir()) == ["a.bin", "b.bin", "c.bin"]
    assert not list(src.iterdir())

    # A destination of another length is not the file's copy: not found, and kept.
    (dst / "a.bin").write_bytes(b"other")
    with trio.fail_after(60):
        [third] = await run_tasks(cluster, TaskBatch(3, "job", TaskOp.MOVE, task[:1]))
    assert third.results[0].status is FileStatus.FAILED
    assert third.results[0].reason is Reason.UFS_NOT_FOUND
    assert (dst / "a.bin").read_bytes() == b"other"
    gc.collect()  # any socket the client left is collected here, under this test's filter
