"""A real Azure Blob API server on loopback for tests: Microsoft's Azurite, blob service.

``AzureServer`` runs ``azurite-blob`` (the npm package ``azurite``, which ``scripts/test``
installs into the git-ignored ``.azurite/`` of the repository) on a random loopback port
with a temporary workspace, and stops it cleanly. Azurite checks Shared Key signatures
against its well-known development account, so a wrong account key is refused as Azure
refuses it (``403 AuthorizationFailure``).

Containers are created with one signed REST call (obstore cannot create containers);
blobs are written and read through obstore itself, the client alluxiojob uses::

    with AzureServer() as server:
        server.create_container("data")
        server.put("data", "a/b.bin", b"...")
        props = server.properties()   # alluxiojob properties pointing at it
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import http.client
import os
import shutil
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alluxiojob.testing.ports import free_port
from alluxiojob.testing.processes import Running, reap, terminate

# Azurite's (and the old storage emulator's) published development account.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")
API_VERSION = "2021-08-06"
REPO = Path(__file__).resolve().parents[2]


def azurite_command() -> str | None:
    """``azurite-blob``: ``$AZURITE_BLOB``, the repository's ``.azurite/``, else ``PATH``."""
    candidates = [os.environ.get("AZURITE_BLOB", ""),
                  str(REPO / ".azurite" / "node_modules" / ".bin" / "azurite-blob"),
                  shutil.which("azurite-blob") or ""]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def _reap(process: subprocess.Popen[bytes], workspace: str) -> None:
    reap(process)
    shutil.rmtree(workspace, ignore_errors=True)


class AzureServer(Running):
    """Azurite's blob service in a subprocess on ``127.0.0.1``. See the module docstring."""

    def __init__(self, *, log_path: str | None = None, startup_timeout: float = 60.0) -> None:
        self.port = free_port()
        self.account = ACCOUNT
        self.account_key = ACCOUNT_KEY
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._workspace = ""
        self._finalizer: weakref.finalize[..., AzureServer] | None = None
        self._stores: dict[str, Any] = {}

    @property
    def url(self) -> str:
        """The blob service endpoint, account included (path-style, as emulators are)."""
        return f"http://127.0.0.1:{self.port}/{self.account}"

    def start(self) -> None:
        command = azurite_command()
        if command is None:
            raise RuntimeError("azurite-blob is not installed: run scripts/test, which "
                               "installs the npm package azurite into .azurite/")
        self._workspace = tempfile.mkdtemp(prefix="azurite-")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self._process = subprocess.Popen(
                [command, "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                 "--location", self._workspace, "--skipApiVersionCheck",
                 "--disableTelemetry", *(() if self.log_path else ("--silent",))],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        finally:
            if not isinstance(log, int):
                log.close()
        self._finalizer = weakref.finalize(self, _reap, self._process, self._workspace)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise RuntimeError(f"azurite-blob exited with {code}")
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"azurite at {self.url} did not answer in time")

    def _answers(self) -> bool:
        """Any HTTP answer to an (unsigned, so refused) listing: the service is up."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", f"/{self.account}?comp=list")
            connection.getresponse().read()
            return True
        except OSError:
            return False
        finally:
            connection.close()

    def stop(self) -> None:
        process = self._process
        if process is not None:
            terminate(process)
        if self._finalizer is not None:
            self._finalizer()  # reaps (a no-op by now) and removes the workspace
            self._finalizer = None
        self._process = None
        self._stores.clear()

    def close(self) -> None:
        self.stop()

    # ------------------------------------------------------------------ configuration
    def properties(self, account_key: str | None = None) -> dict[str, str]:
        """alluxiojob properties that point ``az://`` at this server."""
        return {
            "alluxio.underfs.azure.endpoint": self.url,
            "alluxio.underfs.azure.account.name": self.account,
            "fs.azure.account.key": self.account_key if account_key is None else account_key,
        }

    # ------------------------------------------------------------------ REST
    def _signed(self, method: str, container: str, query: dict[str, str]) -> tuple[int, bytes]:
        """One Shared Key request with an empty body, on a container."""
        headers = {"x-ms-date": email.utils.formatdate(usegmt=True),
                   "x-ms-version": API_VERSION}
        canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
        # Path-style: the account is both the signer and the first path segment.
        resource = f"/{self.account}/{self.account}/{container}" + "".join(
            f"\n{k}:{v}" for k, v in sorted(query.items()))
        # VERB, then 11 standard headers, all empty here (Content-Length 0 is empty too).
        to_sign = method + "\n" * 12 + canonical_headers + resource
        signature = base64.b64encode(hmac.new(base64.b64decode(self.account_key),
                                              to_sign.encode(), hashlib.sha256).digest())
        headers["Authorization"] = f"SharedKey {self.account}:{signature.decode()}"
        target = f"/{self.account}/{container}?" + "&".join(f"{k}={v}" for k, v in query.items())
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, target, body=b"", headers=headers)
            answer = connection.getresponse()
            return answer.status, answer.read()
        finally:
            connection.close()

    def create_container(self, container: str) -> None:
        status, body = self._signed("PUT", container, {"restype": "container"})
        if status != 201:
            raise RuntimeError(f"creating container {container}: {status} {body[:300]!r}")

    def delete_container(self, container: str) -> None:
        status, body = self._signed("DELETE", container, {"restype": "container"})
        if status != 202:
            raise RuntimeError(f"deleting container {container}: {status} {body[:300]!r}")
        self._stores.pop(container, None)

    # ------------------------------------------------------------------ data (obstore)
    def store(self, container: str) -> Any:
        store = self._stores.get(container)
        if store is None:
            from obstore.store import AzureStore

            store = self._stores[container] = AzureStore(
                container, config={"account_name": self.account,
                                   "account_key": self.account_key, "endpoint": self.url},
                client_options={"allow_http": True})
        return store

    def put(self, container: str, name: str, data: bytes) -> None:
        import obstore

        obstore.put(self.store(container), name, data)

    def put_many(self, container: str, blobs: dict[str, bytes], threads: int = 16) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(self.put, container, name, data)
                           for name, data in blobs.items()]:
                future.result()

    def get(self, container: str, name: str) -> bytes:
        import obstore

        return bytes(obstore.get(self.store(container), name).bytes())

    def delete(self, container: str, names: Iterable[str]) -> None:
        import obstore

        for name in names:
            obstore.delete(self.store(container), name)

    def names(self, container: str, prefix: str = "") -> list[str]:
        import obstore

        return sorted(meta["path"] for batch in obstore.list(self.store(container),
                                                              prefix=prefix or None)
                      for meta in batch)


__all__ = ["ACCOUNT", "ACCOUNT_KEY", "AzureServer", "azurite_command"]
