"""The shipped compose setup mounts the cluster token for the service user alone.

A compose file secret is a bind mount: the containers see the host file's own owner and
mode (neither docker compose nor podman-compose applies a secret's uid/gid/mode to a
file). So the setup is the compose file, the image's user, and the script that makes the
file; these tests read the first two and run the third."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from alluxiojob.config import build_config
from alluxiojob.security.token import load_cluster_token

REPO = Path(__file__).resolve().parents[2]
MAKE_TOKEN = REPO / "docker" / "make-cluster-token"
SECRET_TARGET = "/run/secrets/cluster_token"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def _service_uid() -> tuple[int, int]:
    """The USER of the image, as ``uid:gid``."""
    found = re.search(r"^USER (\d+):(\d+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert found, "the Dockerfile runs as a numeric USER uid:gid"
    return int(found.group(1)), int(found.group(2))


def test_every_service_mounts_the_token_file_the_site_file_names() -> None:
    compose = _compose()
    declared = compose["secrets"]["cluster_token"]
    assert declared["file"] == "${ALLUXIOJOB_TOKEN_FILE:-./docker/secrets/cluster.token}"
    uid, gid = _service_uid()
    for name, service in compose["services"].items():
        mounts = [m for m in service["secrets"]
                  if (m if isinstance(m, str) else m["source"]) == "cluster_token"]
        assert len(mounts) == 1, name
        mount = mounts[0]
        if isinstance(mount, dict):  # the long syntax, if used, must agree
            assert mount.get("target", "cluster_token") in ("cluster_token", SECRET_TARGET)
            assert int(mount["uid"]) == uid
            assert int(mount["gid"]) == gid
            assert mount["mode"] == 0o400
    site = (REPO / "docker" / "conf" / "alluxio-site.properties").read_text()
    assert f"alluxio.job.cluster.token.file={SECRET_TARGET}" in site.splitlines()


def test_the_shipped_instructions_make_it_0400_for_the_service_user() -> None:
    uid, gid = _service_uid()
    script = MAKE_TOKEN.read_text()
    assert f"SERVICE_UID={uid}" in script
    assert f"SERVICE_GID={gid}" in script
    assert os.access(MAKE_TOKEN, os.X_OK)
    for shipped in (REPO / "docker-compose.yml", REPO / "scripts" / "container-test"):
        text = shipped.read_text()
        assert "make-cluster-token" in text, shipped
        assert "0444" not in text, f"{shipped.name} still makes the token world-readable"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to uid 10001 needs root")
def test_make_cluster_token_gives_the_file_to_the_service_user_alone(tmp_path: Path) -> None:
    uid, gid = _service_uid()
    token = tmp_path / "secrets" / "cluster.token"
    made = subprocess.run([str(MAKE_TOKEN), str(token)], capture_output=True, text=True,
                          timeout=30)
    assert made.returncode == 0, made.stderr
    info = token.stat()
    assert stat.S_IMODE(info.st_mode) == 0o400
    assert (info.st_uid, info.st_gid) == (uid, gid)
    value, warnings = load_cluster_token(build_config(
        {"alluxio.job.cluster.token.file": str(token)}))
    assert value
    assert warnings == [], "the service has nothing to warn about"
    first = token.read_text()
    assert len(first.strip()) >= 32

    again = subprocess.run([str(MAKE_TOKEN), str(token)], capture_output=True, text=True,
                           timeout=30)
    assert again.returncode == 1
    assert "exists" in again.stderr
    assert token.read_text() == first, "an existing token is kept"
    forced = subprocess.run([str(MAKE_TOKEN), "--force"], capture_output=True, text=True,
                            timeout=30, env={**os.environ, "ALLUXIOJOB_TOKEN_FILE": str(token)})
    assert forced.returncode == 0, forced.stderr
    assert token.read_text() != first
    assert stat.S_IMODE(token.stat().st_mode) == 0o400
    assert sorted(p.name for p in token.parent.iterdir()) == ["cluster.token"]
