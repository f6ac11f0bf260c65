"""``docs/properties.md`` is generated from the property registry and must not drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from alluxiojob.config import docs
from alluxiojob.config.properties import PROPERTIES, TEMPLATES, Keys, PropertyKey


def test_the_committed_page_is_what_the_registry_generates() -> None:
    committed = docs.PAGE.read_text(encoding="utf-8")
    assert committed == docs.render_page(), (
        f"{docs.PAGE.name} is out of date with the property registry (alluxiojob/config/); "
        f"regenerate it: {docs.REGENERATE}")


def test_every_key_and_template_is_on_the_page_with_its_default() -> None:
    page = docs.render_page()
    for name, key in PROPERTIES.items():
        default = f"`{key.default}`" if key.default else "—"
        assert f"| `{name}` | {default} |" in page, name
    for template in TEMPLATES:
        assert f"| `{template.example}` |" in page


def test_a_key_lands_in_the_group_its_name_starts_with() -> None:
    assert docs.group_of(Keys.JOB_BATCH_SIZE.name) == "Jobs"
    assert docs.group_of(Keys.CLUSTER_TOKEN_FILE.name) == "Security"
    assert docs.group_of(Keys.WORKER_UFS_REQUESTS_MAX.name).startswith("Under file systems")
    assert docs.group_of(Keys.PAGE_STORE_DIRS.name) == "Worker"
    assert docs.group_of("alluxio.nobody.knows") == docs.OTHER


def test_a_new_key_changes_the_page_and_check_says_how_to_regenerate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    page = tmp_path / "properties.md"
    assert docs.main(["--out", str(page)]) == 0
    assert docs.main(["--check", "--out", str(page)]) == 0
    monkeypatch.setitem(PROPERTIES, "alluxio.job.new.thing", PropertyKey(
        "alluxio.job.new.thing", str, "7", "A key added without regenerating the page."))
    assert docs.main(["--check", "--out", str(page)]) == 1
    assert docs.REGENERATE in capsys.readouterr().err
    assert "| `alluxio.job.new.thing` | `7` | A key added" in docs.render_page()


def test_a_pipe_in_a_description_does_not_break_the_table(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PROPERTIES, "alluxio.job.piped", PropertyKey(
        "alluxio.job.piped", str, "", "one | two"))
    assert "| `alluxio.job.piped` | — | one \\| two |" in docs.render_page()
