"""Real S3 clients reading a LOADed dataset through one worker's S3 endpoint, byte for
byte, including the files the other worker owns (proxied), with SigV4 checked.

The clients whose pins clash with ours run from ``.venv-clients/`` (``scripts/test``
installs it from ``s3_clients.txt``); a test skips, saying why, when its client is not
there. rclone comes from Debian (``apt-get install rclone``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import Cluster
from tests.integration.s3_fixtures import BUCKET, Loaded, start_loaded

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / ".venv-clients" / "bin"
KEY, SECRET = "AKIAALLUXIOJOBCLIENT", "client-secret-" + "k" * 26
ROWS = 200_000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def client_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k not in ("HOME",)}
    env.update(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", HOME=str(tmp))
    return env


def need(module: str) -> Path:
    python = CLIENTS / "python"
    if not python.exists():
        pytest.skip(".venv-clients/ is missing: scripts/test installs the S3 clients there")
    probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True,
                           text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"{module} is not installed in .venv-clients/ "
                    f"({probe.stderr.strip().splitlines()[-1:]})")
    return python


def run_client(python: Path, code: str, env: dict[str, str], **values: Any) -> Any:
    """Run ``code`` in the clients' virtualenv; it prints one JSON document."""
    prelude = "".join(f"{k} = {v!r}\n" for k, v in values.items())
    done = subprocess.run([str(python), "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def credentials(root: Path) -> Path:
    path = root / "s3-credentials.json"
    path.write_text(json.dumps({KEY: SECRET}))
    path.chmod(0o600)
    return path


def write_parquet(root: Path) -> None:
    python = CLIENTS / "python"
    if not python.exists():
        return
    code = f"""
        import pyarrow as pa, pyarrow.parquet as pq
        table = pa.table({{"x": pa.array(range({ROWS}), pa.int64()),
                          "s": pa.array([f"row-{{i}}" for i in range({ROWS})])}})
        pq.write_table(table, {str(root / "table.parquet")!r}, row_group_size=40_000)
    """
    subprocess.run([str(python), "-c", textwrap.dedent(code)], check=False, timeout=300)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    tmp = tmp_path_factory.mktemp("s3clients")
    made: list[Cluster] = []

    def factory(**props: str) -> Cluster:
        made.append(Cluster(tmp / "cluster", dict(props)))
        return made[-1]

    extra = tmp / "dataset"
    extra.mkdir()
    write_parquet(extra)
    try:
        yield start_loaded(factory, tmp, **{
            "alluxio.worker.s3.credentials.file": str(credentials(tmp)),
            "alluxio.worker.load.file.partition.size": "1MiB"})
    finally:
        for cluster in made:
            cluster.stop_all()


def expected(loaded: Loaded) -> dict[str, str]:
    return {k: sha(v) for k, v in loaded.files.items()}


def tree_shas(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha(p.read_bytes())
            for p in root.rglob("*") if p.is_file()}


def test_aws_cli(served: Loaded, tmp_path: Path) -> None:
    if not (CLIENTS / "aws").exists():
        pytest.skip("the AWS CLI (awscli) is not installed in .venv-clients/")
    env = client_env(tmp_path)
    aws = [str(CLIENTS / "aws"), "--endpoint-url", served.endpoint(0), "s3"]

    def run(*args: str) -> str:
        done = subprocess.run([*aws, *args], capture_output=True, text=True, timeout=300,
                              env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    top = run("ls", f"s3://{BUCKET}/")
    assert "PRE nested/" in top
    assert "PRE small/" in top
    assert "big.bin" in top
    keys = [line.split(maxsplit=3)[3] for line in run("ls", "--recursive",
                                                      f"s3://{BUCKET}/").splitlines()]
    assert sorted(keys) == sorted(served.files)
    run("cp", "--recursive", "--only-show-errors", f"s3://{BUCKET}/", str(tmp_path / "out"))
    assert tree_shas(tmp_path / "out") == expected(served)


def test_s3fs_and_duckdb(served: Loaded, tmp_path: Path) -> None:
    python = need("s3fs")
    code = """
        import hashlib, json, s3fs
        fs = s3fs.S3FileSystem(endpoint_url=EP, key=KEY, secret=SECRET,
                               client_kwargs={"region_name": "us-east-1"},
                               config_kwargs={"s3": {"addressing_style": "path"}})
        found = sorted(fs.find(BUCKET))
        shas = {p.split("/", 1)[1]: hashlib.sha256(fs.cat_file(p)).hexdigest() for p in found}
        with fs.open(BUCKET + "/big.bin", "rb", block_size=65536) as f:
            f.seek(1000)
            part = f.read(5000)
        out = {"ls": sorted(fs.ls(BUCKET, detail=False)), "shas": shas,
               "part": hashlib.sha256(part).hexdigest()}
        try:
            import duckdb
            duckdb.register_filesystem(fs)
            row = duckdb.sql("select count(*), sum(x) from read_parquet('s3://"
                             + BUCKET + "/table.parquet')").fetchall()[0]
            out["duckdb"] = [int(row[0]), int(row[1])]
        except ImportError:
            out["duckdb"] = None
        print(json.dumps(out))
    """
    out = run_client(python, code, client_env(tmp_path), EP=served.endpoint(0), KEY=KEY,
                     SECRET=SECRET, BUCKET=BUCKET)
    assert out["ls"] == [f"{BUCKET}/{n}" for n in ("big.bin", "empty.bin", "nested",
                                                   "odd names", "small", "table.parquet")
                         if n != "table.parquet" or "table.parquet" in served.files]
    assert out["shas"] == expected(served)
    assert out["part"] == sha(served.files["big.bin"][1000:6000])
    if "table.parquet" in served.files:
        assert out["duckdb"] == [ROWS, ROWS * (ROWS - 1) // 2]


def test_pyarrow_reads_parquet_with_ranged_gets(served: Loaded, tmp_path: Path) -> None:
    python = need("pyarrow")
    if "table.parquet" not in served.files:
        pytest.skip("pyarrow could not write the Parquet file")
    before = served.metrics(0).get('alluxio_worker_s3_requests_total{op="GetObject",'
                                   'status="206"}', 0)
    code = """
        import json, pyarrow.fs as pafs, pyarrow.parquet as pq
        fs = pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, region="us-east-1",
                               endpoint_override=HOSTPORT, scheme="http")
        table = pq.read_table(BUCKET + "/table.parquet", filesystem=fs, columns=["x"])
        info = fs.get_file_info(pafs.FileSelector(BUCKET, recursive=False))
        print(json.dumps({"rows": table.num_rows, "sum": sum(table.column("x").to_pylist()),
                          "top": sorted(i.base_name for i in info)}))
    """
    out = run_client(python, code, client_env(tmp_path), KEY=KEY, SECRET=SECRET,
                     BUCKET=BUCKET, HOSTPORT=served.endpoint(0).removeprefix("http://"))
    assert out["rows"] == ROWS
    assert out["sum"] == ROWS * (ROWS - 1) // 2
    assert "nested" in out["top"]
    assert "table.parquet" in out["top"]
    after = served.metrics(0)['alluxio_worker_s3_requests_total{op="GetObject",status="206"}']
    assert after - before >= 2, "the footer and the column chunks, as ranged GETs"


def test_obstore(served: Loaded) -> None:
    import obstore
    from obstore.store import S3Store

    store = S3Store(BUCKET, endpoint=served.endpoint(0), access_key_id=KEY,
                    secret_access_key=SECRET, region="us-east-1",
                    virtual_hosted_style_request=False, client_options={"allow_http": True})
    listed = sorted(m["path"] for batch in obstore.list(store) for m in batch)
    assert listed == sorted(served.files)
    top = obstore.list_with_delimiter(store)
    assert sorted(top["common_prefixes"]) == ["nested", "odd names", "small"]
    for key, data in served.files.items():
        assert sha(bytes(obstore.get(store, key).bytes())) == sha(data), key
    assert bytes(obstore.get_range(store, "big.bin", start=10, end=110)) \
        == served.files["big.bin"][10:110]


def rclone_env(endpoint: str, tmp: Path) -> dict[str, str]:
    env = client_env(tmp)
    env.update(RCLONE_CONFIG_W_TYPE="s3", RCLONE_CONFIG_W_PROVIDER="Other",
               RCLONE_CONFIG_W_ENDPOINT=endpoint, RCLONE_CONFIG_W_ACCESS_KEY_ID=KEY,
               RCLONE_CONFIG_W_SECRET_ACCESS_KEY=SECRET, RCLONE_CONFIG_W_REGION="us-east-1",
               RCLONE_CONFIG_W_FORCE_PATH_STYLE="true")
    return env


def rclone(env: dict[str, str], *args: str) -> str:
    if shutil.which("rclone") is None:
        pytest.skip("rclone is not installed (Debian: apt-get install rclone)")
    done = subprocess.run(["rclone", "--config", "/dev/null", *args], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_rclone(served: Loaded, tmp_path: Path) -> None:
    env = rclone_env(served.endpoint(0), tmp_path)
    top = rclone(env, "lsf", f"w:{BUCKET}").split()
    assert {"nested/", "small/", "big.bin"} <= set(top)
    files = rclone(env, "lsf", "-R", "--files-only", f"w:{BUCKET}").splitlines()
    assert sorted(files) == sorted(served.files)
    rclone(env, "copy", f"w:{BUCKET}", str(tmp_path / "out"))
    assert tree_shas(tmp_path / "out") == expected(served)


def test_s3torchconnector(served: Loaded, tmp_path: Path) -> None:
    python = need("s3torchconnector")
    code = """
        import hashlib, json
        from s3torchconnector import S3ClientConfig, S3MapDataset
        dataset = S3MapDataset.from_prefix("s3://" + BUCKET + "/small/", region="us-east-1",
                                           endpoint=EP,
                                           s3client_config=S3ClientConfig(force_path_style=True))
        print(json.dumps({item.key: hashlib.sha256(item.read()).hexdigest()
                          for item in dataset}))
    """
    out = run_client(python, code, client_env(tmp_path), EP=served.endpoint(0),
                     BUCKET=BUCKET)
    assert out == {k: v for k, v in expected(served).items() if k.startswith("small/")}


def test_redirect_mode_rclone_follows_boto3_does_not(
        cluster_factory: Any, tmp_path: Path) -> None:
    """Why proxy is the default: botocore (boto3, the AWS CLI, s3fs) does not follow a
    307 to another host, and Go's client (rclone) follows it but drops the Authorization
    header on the way (another port is another host), so a signed request fails. Clients
    that follow with their credentials in the URL (presigned URLs) or with none
    (protected mode on loopback, as here, and alluxiofs) read through redirects."""
    from botocore.exceptions import ClientError

    from tests.integration.s3_fixtures import boto3_client

    loaded = start_loaded(cluster_factory, tmp_path,
                          **{"alluxio.worker.s3.redirect.enabled": "true"})
    env = rclone_env(loaded.endpoint(0), tmp_path)
    rclone(env, "copy", f"w:{BUCKET}", str(tmp_path / "out"))
    assert tree_shas(tmp_path / "out") == expected(loaded)
    redirected = loaded.metrics(0)['alluxio_worker_s3_forwarded_total{how="redirect"}']
    assert redirected >= len(loaded.owned_by(1))
    assert loaded.metrics(0)['alluxio_worker_s3_forwarded_total{how="proxy"}'] == 0
    with pytest.raises(ClientError) as error:
        boto3_client(loaded.endpoint(0)).get_object(Bucket=BUCKET, Key=loaded.owned_by(1)[0])
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 307
