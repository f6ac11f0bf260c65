"""The security decisions: peers, tokens, TLS settings, path confinement and overlap."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import trustme

from alluxiojob.config import ConfigError, build_config
from alluxiojob.security import PUBLIC_PATHS, Security, check_peer, is_loopback
from alluxiojob.security.paths import PathAllowlist, PathNotAllowed, transfer_overlap
from alluxiojob.security.token import ClusterToken, bearer_credentials, load_cluster_token


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.1.2.3", False), ("198.18.0.1", False), ("::ffff:10.0.0.1", False),
    ("0.0.0.0", False), ("", False), (None, False), ("localhost", False), ("fe80::1%eth0", False),
])
def test_loopback_peers(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_protected_mode_admits_loopback_only_on_every_path() -> None:
    none = ClusterToken()
    assert check_peer(none, "127.0.0.1", "/api/v1/master/list_job", None) is None
    for path in ("/healthz", "/metrics", "/api/v1/files"):
        denial = check_peer(none, "10.0.0.7", path, b"Bearer anything")
        assert denial is not None
        assert denial.status == 403
        assert "protected mode" in denial.message
        assert "10.0.0.7" in denial.message
        assert "alluxio.job.cluster.token.file" in denial.message


def test_protected_mode_needs_a_local_host_name() -> None:
    none = ClusterToken()
    for host in (b"localhost", b"localhost:19999", b"127.0.0.1:1", b"[::1]:80", b"::1",
                 b"a.localhost", socket.gethostname().encode()):
        assert check_peer(none, "127.0.0.1", "/x", None, host) is None, host
    for host in (b"evil.example", b"evil.example:80", b"127.0.0.1.evil.example", b"[::2]"):
        denial = check_peer(none, "127.0.0.1", "/x", None, host)
        assert denial is not None, host
        assert denial.status == 403
    token = ClusterToken("t0ken", "test")
    assert check_peer(token, "127.0.0.1", "/x", b"Bearer t0ken", b"evil.example") is None


def test_token_mode_needs_the_bearer_token_except_on_public_paths() -> None:
    token = ClusterToken("s3cret-Token", "test")
    assert "/healthz" in PUBLIC_PATHS
    assert check_peer(token, "10.0.0.7", "/healthz", None) is None
    assert check_peer(token, "10.0.0.7", "/metrics", b"Bearer s3cret-Token") is None
    assert check_peer(token, "10.0.0.7", "/metrics", "bearer  s3cret-Token ") is None
    for header in (None, b"", b"s3cret-Token", b"Basic s3cret-Token", b"Bearer s3cret",
                   b"Bearer s3cret-Token2", "Bearer s3cret-Tokén"):
        denial = check_peer(token, "127.0.0.1", "/metrics", header)
        assert denial is not None, header
        assert denial.status == 401, header
        assert "s3cret" not in denial.message


def test_the_token_never_prints() -> None:
    token = ClusterToken("s3cret-Token", "alluxio.job.cluster.token")
    for text in (str(token), repr(token), f"{token}", repr(Security(token, None, None))):  # type: ignore[arg-type]
        assert "s3cret" not in text
    assert bearer_credentials(b"Bearer abc") == b"abc"
    assert bearer_credentials("Token abc") is None


def test_token_file_rules(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    secret.chmod(0o600)
    token, warnings = load_cluster_token(build_config(
        {"alluxio.job.cluster.token.file": str(secret)}))
    assert token.matches("from-a-file")
    assert warnings == []

    secret.chmod(0o644)
    _, warnings = load_cluster_token(build_config(
        {"alluxio.job.cluster.token.file": str(secret)}))
    assert len(warnings) == 1
    assert str(secret) in warnings[0]
    assert f"chmod 600 {secret}" in warnings[0]

    with pytest.raises(ConfigError, match="both alluxio.job.cluster.token and "
                       "alluxio.job.cluster.token.file"):
        load_cluster_token(build_config({"alluxio.job.cluster.token": "x",
                                         "alluxio.job.cluster.token.file": str(secret)}))
    with pytest.raises(ConfigError, match="cannot read alluxio.job.cluster.token.file"):
        load_cluster_token(build_config(
            {"alluxio.job.cluster.token.file": str(tmp_path / "missing")}))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_cluster_token(build_config(
            {"alluxio.job.cluster.token.file": str(tmp_path / "empty")}))
    with pytest.raises(ConfigError, match="printable ASCII"):
        load_cluster_token(build_config({"alluxio.job.cluster.token": "two words"}))


def _tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = (tmp_path / "cert.pem", tmp_path / "key.pem",
                                    tmp_path / "ca.pem")
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    return cert_file, key_file, ca_file


def test_tls_settings_are_checked_at_startup(tmp_path: Path) -> None:
    cert, key, ca = _tls_files(tmp_path)
    good = Security.from_config(build_config({
        "alluxio.job.tls.cert.file": str(cert), "alluxio.job.tls.key.file": str(key),
        "alluxio.job.tls.ca.file": str(ca)}), serving=True)
    assert good.tls.serving
    assert good.tls.http_scheme == "https"
    assert good.tls.ws_scheme == "wss"
    plain = Security.from_config(build_config({}), serving=True)
    assert plain.tls.http_scheme == "http"
    assert plain.tls.client_context() is None

    bad_pem = tmp_path / "bad.pem"
    bad_pem.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    cases = [
        ({"alluxio.job.tls.cert.file": str(cert)}, "alluxio.job.tls.key.file is not"),
        ({"alluxio.job.tls.key.file": str(key)}, "alluxio.job.tls.cert.file is not"),
        ({"alluxio.job.tls.cert.file": str(tmp_path / "nope.pem"),
          "alluxio.job.tls.key.file": str(key)}, "cannot read alluxio.job.tls.cert.file"),
        ({"alluxio.job.tls.cert.file": str(key), "alluxio.job.tls.key.file": str(key)},
         "alluxio.job.tls.cert.file .* holds no PEM certificate"),
        ({"alluxio.job.tls.cert.file": str(cert), "alluxio.job.tls.key.file": str(cert)},
         "alluxio.job.tls.key.file .* holds no PEM private key"),
        ({"alluxio.job.tls.cert.file": str(bad_pem), "alluxio.job.tls.key.file": str(key)},
         "cannot be used together"),
        ({"alluxio.job.tls.ca.file": str(bad_pem)}, "alluxio.job.tls.ca.file .* not a usable"),
    ]
    for props, message in cases:
        with pytest.raises(ConfigError, match=message):
            Security.from_config(build_config(props), serving=True)


def test_allowlist_matches_whole_components_after_resolution(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "in").mkdir(parents=True)
    (tmp_path / "database").mkdir()
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", data / "link-out")
    os.symlink(data / "in", tmp_path / "link-in")
    allow = PathAllowlist([str(data), "s3://bucket/prefix"])
    assert allow.admits(str(data))
    assert allow.admits(f"file://{data}/in/x")
    assert allow.admits(str(tmp_path / "link-in" / "f")), "resolves to data/in/f"
    for outside in (str(tmp_path / "database"), f"{data}/../secret", f"{data}/link-out/f",
                    str(tmp_path), "/etc/shadow", "s3://bucket/prefix-other/x",
                    "s3://bucket/prefix/../other", "s3://other/prefix/x", "gs://bucket/prefix"):
        assert not allow.admits(outside), outside
    assert allow.admits("s3://bucket/prefix/a/../b")
    with pytest.raises(PathNotAllowed, match="alluxio.job.path.allowlist=") as caught:
        allow.check("/etc/shadow", "source")
    assert caught.value.reason == "PERMISSION_DENIED"
    assert PathAllowlist([]).admits("/anything")
    assert not PathAllowlist([]).enabled
    with pytest.raises(ConfigError, match="alluxio.job.path.allowlist"):
        PathAllowlist(["relative/dir"])


def test_literal_admission_is_string_logic_that_follows_no_symlink(tmp_path: Path) -> None:
    """For copies already cached: the path as written, ``..`` never admitted, whole
    components; a symlink is not followed (``admits`` is what follows them)."""
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", data / "link-out")
    allow = PathAllowlist([str(data), "s3://bucket/prefix"])
    assert allow.admits_literally(str(data))
    assert allow.admits_literally(f"file://{data}/in/x")
    assert allow.admits_literally("s3://bucket/prefix/a/b")
    assert allow.admits_literally(f"{data}/link-out/f"), "as written: inside"
    assert not allow.admits(f"{data}/link-out/f"), "resolved: outside"
    for outside in (str(tmp_path / "data-other"), f"{data}/../secret", str(tmp_path),
                    "/etc/shadow", "s3://bucket/prefix-other/x", "s3://bucket/prefix/a/../b",
                    "s3://other/prefix/x", "gs://bucket/prefix", "relative/x", ""):
        assert not allow.admits_literally(outside), outside
    assert PathAllowlist([]).admits_literally("/anything")
    assert not PathAllowlist([f"{data}/../data"]).admits_literally(f"{data}/x"), \
        "a prefix with '..' is never matched as written"


def test_allowlist_defaults_to_the_ufs_root() -> None:
    config = build_config({"alluxio.dora.client.ufs.root": "/srv/ufs"})
    assert PathAllowlist.from_config(config).prefixes == ("/srv/ufs",)
    assert not PathAllowlist.from_config(build_config({})).enabled


def test_overlap_sees_through_symlinks_and_inodes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    os.symlink(src, tmp_path / "dst-link")
    os.symlink(src / "sub", tmp_path / "sub-link")
    os.link(src / "sub" / "f", tmp_path / "hard")
    refused = [
        (src, src), (src, src / "sub"), (src, src / "new" / "deeper"), (src / "sub", src),
        (src, tmp_path / "dst-link"), (src, tmp_path / "dst-link" / "x"),
        (src, tmp_path / "sub-link"), (tmp_path / "sub-link", src),
        (src / "sub" / "f", tmp_path / "hard"), (src, tmp_path / "x" / ".." / "src"),
        (src, Path("/")),
    ]
    for a, b in refused:
        assert transfer_overlap(str(a), str(b)) is not None, (a, b)
    assert transfer_overlap(str(src), str(other)) is None
    assert transfer_overlap(str(src), str(tmp_path / "src-copy")) is None
    assert transfer_overlap("s3://b/a", "s3://b/a/x") is not None
    assert transfer_overlap("s3://b/a", "s3://b/ab") is None
    assert transfer_overlap(str(src), "s3://b/a") is None
