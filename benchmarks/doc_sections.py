"""Rewrite one generated section of a Markdown page, between its begin and end markers."""

from __future__ import annotations

from pathlib import Path


def replace_section(page: Path, name: str, text: str) -> None:
    """Put ``text`` between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``page``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    content = page.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{page}: markers {begin} ... {end} are missing")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    page.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}")
