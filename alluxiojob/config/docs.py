"""Write ``docs/properties.md`` from the property registry, so the page cannot drift.

    python -m alluxiojob.config.docs            # rewrite docs/properties.md
    python -m alluxiojob.config.docs --check    # exit 1 if the page differs from the registry

Keys are grouped by what their name starts with (``GROUPS``, first match wins), so a new
key lands in its group without naming one. ``tests/unit/test_properties_page.py`` fails
when the committed page and ``render_page()`` differ.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from alluxiojob.config.properties import PROPERTIES, TEMPLATES

PAGE = Path(__file__).resolve().parents[2] / "docs" / "properties.md"
REGENERATE = "python -m alluxiojob.config.docs"

# (title, name prefixes or whole names); the first group whose prefix matches takes a key.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Security", ("alluxio.job.cluster.token", "alluxio.job.tls.", "alluxio.job.path.allowlist")),
    ("Coordinator and job store", ("alluxio.coordinator.", "alluxio.etcd.")),
    ("Jobs", ("alluxio.job.",)),
    ("Under file systems (local, S3, GCS, Azure)",
     ("alluxio.underfs.", "alluxio.dora.client.ufs.", "s3a.", "fs.azure.",
      "alluxio.worker.job.ufs.")),
    ("Worker", ("alluxio.worker.",)),
    ("General", ("alluxio.work.dir",)),
)
OTHER = "Other"

HEADER = f"""\
# Properties

<!-- Generated from alluxiojob/config/properties.py by `{REGENERATE}`; do not edit. -->

Every service and the CLI read the same properties: from `alluxio-site.properties`
(`--conf FILE`, default `$ALLUXIO_CONF_DIR/alluxio-site.properties`), then `ALLUXIO_*`
environment variables (`alluxio.job.batch.size` → `ALLUXIO_JOB_BATCH_SIZE`), then `-D`,
each overriding the one before. Durations and sizes parse as Alluxio writes them (`15s`,
`1H`, `7d`, `256MiB`); `${{other.key}}` in a value stands for that key's value.
- A known key with a bad value stops startup with a message that names the key and where
  the value came from.
- An unknown key only warns, naming the closest known key, because one site file is
  usually shared by every Alluxio component.
- Secrets (marked *secret*) are never logged, returned or echoed in an error.
"""


def group_of(name: str) -> str:
    for title, prefixes in GROUPS:
        if any(name.startswith(prefix) for prefix in prefixes):
            return title
    return OTHER


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(name: str, default: str | None, description: str, secret: bool) -> str:
    shown = f"`{_cell(default)}`" if default else "—"
    note = " *secret*" if secret else ""
    return f"| `{_cell(name)}` | {shown} | {_cell(description)}{note} |"


def _rows_by_group() -> dict[str, list[tuple[str, str]]]:
    """Group title -> (name, table row), for every key and every key template."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for name, key in PROPERTIES.items():
        rows.setdefault(group_of(name), []).append(
            (name, _row(name, key.default, key.description, key.secret)))
    for template in TEMPLATES:
        name = template.example
        rows.setdefault(group_of(name), []).append(
            (name, _row(name, None, template.description, template.secret)))
    return rows


def render_page() -> str:
    """The whole page, as committed."""
    rows = _rows_by_group()
    order = [title for title, _ in GROUPS] + [OTHER]
    parts = [HEADER]
    for title in order:
        if title not in rows:
            continue
        parts.append(f"\n## {title}\n\n| property | default | |\n|---|---|---|\n")
        parts.append("\n".join(row for _, row in sorted(rows[title])) + "\n")
    return "".join(parts)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=REGENERATE, description="Write docs/properties.md from the property registry.")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the page differs from the registry; write nothing")
    parser.add_argument("--out", type=Path, default=PAGE, help=f"the page (default {PAGE})")
    args = parser.parse_args(None if argv is None else list(argv))
    page = render_page()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != page:
            print(f"{args.out} is out of date; regenerate it: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(page, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
