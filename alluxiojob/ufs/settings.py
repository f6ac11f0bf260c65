"""What a process needs to reach the object stores, read from its own configuration.

Every process (the coordinator that lists, a worker and each of its pool processes that
read and write) builds its store handles from these settings; credentials never travel
in tasks. The secret is kept out of ``repr`` so that it cannot reach a log line by
accident, and ``redact`` scrubs it from any message that leaves the process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from alluxiojob.config import Config, Keys

# Environment variables whose values are secrets, whichever store reads them.
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_ACCOUNT_KEY",
               "AZURE_STORAGE_SAS_KEY", "AZURE_CLIENT_SECRET")


@dataclass(frozen=True)
class UfsSettings:
    s3_endpoint: str = ""
    s3_region: str = ""
    s3_path_style: bool = False
    s3_access_key: str = field(default="", repr=False)
    s3_secret_key: str = field(default="", repr=False)
    azure_account: str = ""
    azure_key: str = field(default="", repr=False)
    azure_endpoint: str = ""  # empty: https://<account>.blob.core.windows.net
    max_retries: int = 10
    requests_per_process: int = 64  # object-store requests a pool process keeps in flight
    read_size: int = 256 << 20  # bytes one GET reads; larger objects are ranged GETs

    @classmethod
    def from_config(cls, config: Config, pool_size: int = 1) -> UfsSettings:
        in_flight = config[Keys.WORKER_UFS_REQUESTS_MAX]
        account, key, endpoint = _azure(config)
        return cls(
            s3_endpoint=config[Keys.S3_ENDPOINT],
            s3_region=config[Keys.S3_REGION],
            s3_path_style=config[Keys.S3_DISABLE_DNS_BUCKETS],
            s3_access_key=config[Keys.S3_ACCESS_KEY],
            s3_secret_key=config[Keys.S3_SECRET_KEY],
            azure_account=account,
            azure_key=key,
            azure_endpoint=endpoint,
            max_retries=config[Keys.UFS_MAX_RETRIES],
            requests_per_process=max(1, -(-in_flight // max(1, pool_size))),
            read_size=config[Keys.UFS_READ_SIZE],
        )

    def secrets(self) -> list[str]:
        found = [self.s3_secret_key, self.azure_key]
        found += [os.environ.get(name, "") for name in _SECRET_ENV]
        return [s for s in found if len(s) >= 4]

    def redact(self, text: str) -> str:
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text


def _azure(config: Config) -> tuple[str, str, str]:
    """(account, key, endpoint) of ``az://`` URIs.

    The account is ``alluxio.underfs.azure.account.name``, else the one account that has a
    ``fs.azure.account.key.<account>.<service>.<suffix>`` key (the config refuses several
    without a name). That account's own key wins over ``fs.azure.account.key``; its suffix,
    outside the public cloud, gives the endpoint unless one is set.
    """
    per_account = config.azure_account_keys()
    account = config[Keys.AZURE_ACCOUNT_NAME]
    if not account and len(per_account) == 1:
        account = next(iter(per_account))
    key = config[Keys.AZURE_ACCOUNT_KEY]
    endpoint = config[Keys.AZURE_ENDPOINT]
    if account in per_account:
        key, suffix = per_account[account]
        if not endpoint and suffix != "core.windows.net":
            endpoint = f"https://{account}.blob.{suffix}"
    return account, key, endpoint
