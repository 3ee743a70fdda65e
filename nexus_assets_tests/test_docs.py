"""The README and the pages in docs/: every relative link and image resolves inside the repository.

A link to a Markdown file with a ``#fragment`` must also name one of that file's headings (as the
repository host turns headings into anchors), so that a renamed section cannot leave a dead link.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~)")
_INLINE_CODE = re.compile(r"`[^`]*`")
# [text](target) and ![alt](target); the text may hold one level of brackets
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code removed (links there are examples)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(_INLINE_CODE.sub("", line))
    return lines


def anchor(heading: str) -> str:
    """The anchor a heading gets: lower case, inline markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = anchor(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    return [m.group(1) for line in _prose(page.read_text(encoding="utf-8")) for m in _LINK.finditer(line)]


def broken(page: Path) -> list[str]:
    problems = []
    for target in links(page):
        if _SCHEME.match(target) or target.startswith("//"):
            continue  # an external address: not checked here
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file or folder")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading with the anchor #{fragment} in {resolved.relative_to(ROOT)}")
    return problems


def test_the_docs_folder_has_the_step_pages():
    assert {p.name for p in PAGES} >= {"README.md", "ingestion.md", "ensembles.md", "signals.md", "metrics.md"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves_in_the_repository(page):
    assert links(page), f"{page.name} links nowhere: the checker found nothing to check"
    assert broken(page) == []


def table_rows_with_a_wrong_cell_count(page: Path) -> list[int]:
    """Line numbers of table rows whose cell count differs from their header's (an unescaped ``|``
    inside code splits a cell on the repository host)."""
    wrong, header = [], None
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("|"):
            header = None
            continue
        cells = len(re.findall(r"(?<!\\)\|", line))
        if header is None:
            header = cells
        elif cells != header:
            wrong.append(number)
    return wrong


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_table_row_has_as_many_cells_as_its_header(page):
    assert table_rows_with_a_wrong_cell_count(page) == []


def test_the_readme_shows_its_two_screenshots():
    images = [t for t in links(ROOT / "README.md") if t.endswith(".png")]
    assert images == ["docs/img/dagster-ui.png", "docs/img/dashboard.png"]
    assert all((ROOT / image).stat().st_size < 300_000 for image in images)


_NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
            "seventeen eighteen nineteen twenty").split()


def _section(text: str, heading: str) -> str:
    """The text of the section under ``heading`` (a whole heading line), up to the next heading of any level."""
    start = text.index(f"\n{heading}\n")
    end = re.search(r"\n#{1,6} ", text[start + 1 + len(heading):])
    return text[start:start + 1 + len(heading) + end.start()] if end else text[start:]


def test_the_readme_names_every_asset_of_the_main_job():
    """The graph at the top, the UI tour's count and the data layout follow the definitions: a new
    step that the README does not show fails here."""
    from nexus_assets.definitions import MAIN_JOB, defs

    keys = {key.to_user_string() for key in defs.resolve_job_def(MAIN_JOB).asset_layer.executable_asset_keys}
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    graph = text.split("```")[1]
    assert keys <= set(re.findall(r"\w+", graph)), "the README's graph lacks an asset"
    assert f"*Catalog* lists its {_NUMBERS[len(keys)]} assets" in text
    layout = _section(text, "### Data layout")
    assert [key for key in sorted(keys) if f"{key}/" not in layout and f"`{key}" not in layout] == []


def test_the_checker_finds_a_dead_link_an_image_and_an_anchor(tmp_path, monkeypatch):
    tmp_path = tmp_path.resolve()
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## The `x` step (two)\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#the-x-step-two) [web](https://example.org/x) `[code](nope.md)`\n"
        "```\n[fenced](nope.md)\n```\n"
        "[dead](docs/b.md) ![img](docs/img/x.png) [anchor](docs/a.md#nope) [up](../outside.md)\n"
    )
    assert broken(page) == [
        "docs/b.md: no such file or folder",
        "docs/img/x.png: no such file or folder",
        "docs/a.md#nope: no heading with the anchor #nope in docs/a.md",
        "../outside.md: outside the repository",
    ]
    page.write_text("| a | b |\n|---|---|\n| `x\\|y` | z |\n| `x|y` | z |\n")
    assert table_rows_with_a_wrong_cell_count(page) == [4]
