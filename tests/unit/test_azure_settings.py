"""Azure Blob properties: validation, Alluxio's per-account key, and what ``az://`` uses."""

from __future__ import annotations

import base64

import pytest

from alluxiojob.config.properties import Config, ConfigError, Keys, load_config
from alluxiojob.ufs.settings import UfsSettings

KEY = base64.b64encode(bytes(range(64))).decode()
OTHER = base64.b64encode(bytes(range(64, 128))).decode()
pytestmark = pytest.mark.timeout(30)


def _load(*defines: str) -> Config:
    return load_config(None, list(defines), environ={})


def test_unset_means_the_environment_decides() -> None:
    settings = UfsSettings.from_config(_load())
    assert (settings.azure_account, settings.azure_key, settings.azure_endpoint) == ("", "", "")


def test_account_key_and_endpoint() -> None:
    config = _load("alluxio.underfs.azure.account.name=myaccount", f"fs.azure.account.key={KEY}",
                   "alluxio.underfs.azure.endpoint=http://127.0.0.1:10000/devstoreaccount1/")
    assert config.warnings == ()
    settings = UfsSettings.from_config(config)
    assert settings.azure_account == "myaccount"
    assert settings.azure_key == KEY
    assert settings.azure_endpoint == "http://127.0.0.1:10000/devstoreaccount1"
    assert KEY not in repr(settings)
    assert settings.redact(f"signed with {KEY}.") == "signed with ***."


@pytest.mark.parametrize(("define", "says"), [
    ("alluxio.underfs.azure.account.name=My_Account", "3 to 24 lowercase letters and digits"),
    ("alluxio.underfs.azure.account.name=ab", "3 to 24 lowercase letters and digits"),
    ("alluxio.underfs.azure.endpoint=127.0.0.1:10000", "not an http:// or https:// URL"),
    ("alluxio.underfs.azure.endpoint=ftp://host/x", "not an http:// or https:// URL"),
    ("alluxio.underfs.azure.endpoint=http:///path", "not an http:// or https:// URL"),
])
def test_bad_values_name_the_key(define: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        _load(define)
    assert define.partition("=")[0] in str(info.value)


@pytest.mark.parametrize("name", [
    "fs.azure.account.key", "fs.azure.account.key.myaccount.blob.core.windows.net"])
def test_a_key_that_is_not_base64_is_refused_without_repeating_it(name: str) -> None:
    secret = "n0t-base64-" + "x" * 30 + "!"
    with pytest.raises(ConfigError) as info:
        _load(f"{name}={secret}")
    message = str(info.value)
    assert name in message
    assert "not base64" in message
    assert secret not in message
    assert "not shown" in message


def test_alluxio_per_account_key_names_the_account() -> None:
    config = _load(f"fs.azure.account.key.myaccount.blob.core.windows.net={KEY}")
    assert config.warnings == (), "Alluxio's documented name is not an unknown key"
    settings = UfsSettings.from_config(config)
    assert (settings.azure_account, settings.azure_key, settings.azure_endpoint) == (
        "myaccount", KEY, "")


def test_per_account_key_wins_over_the_plain_one_and_gives_the_cloud() -> None:
    config = _load(f"fs.azure.account.key={OTHER}",
                   f"fs.azure.account.key.cnaccount.blob.core.chinacloudapi.cn={KEY}")
    settings = UfsSettings.from_config(config)
    assert settings.azure_account == "cnaccount"
    assert settings.azure_key == KEY
    assert settings.azure_endpoint == "https://cnaccount.blob.core.chinacloudapi.cn"
    # An endpoint set explicitly is kept.
    settings = UfsSettings.from_config(config.with_overrides(
        {"alluxio.underfs.azure.endpoint": "https://proxy.example:8443/cnaccount"}))
    assert settings.azure_endpoint == "https://proxy.example:8443/cnaccount"


def test_several_accounts_need_the_account_name() -> None:
    keys = [f"fs.azure.account.key.first.blob.core.windows.net={KEY}",
            f"fs.azure.account.key.second.dfs.core.windows.net={OTHER}"]
    with pytest.raises(ConfigError, match="several Azure storage accounts") as info:
        _load(*keys)
    assert "first, second" in str(info.value)
    assert Keys.AZURE_ACCOUNT_NAME.name in str(info.value)
    settings = UfsSettings.from_config(_load(*keys, "alluxio.underfs.azure.account.name=second"))
    assert (settings.azure_account, settings.azure_key) == ("second", OTHER)
    # An account with no key of its own: the plain key, if any.
    settings = UfsSettings.from_config(_load(*keys, "alluxio.underfs.azure.account.name=third"))
    assert (settings.azure_account, settings.azure_key) == ("third", "")


def test_a_malformed_per_account_name_is_an_unknown_key() -> None:
    config = _load(f"fs.azure.account.key.MyAccount.blob.core.windows.net={KEY}")
    assert len(config.warnings) == 1
    assert "unknown property fs.azure.account.key.MyAccount" in config.warnings[0]
    assert KEY not in config.warnings[0]
