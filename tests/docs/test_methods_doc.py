"""docs/methods.md: its links resolve, every attack and defense has an anchor, every paper of the
published tables is referenced, and links into it from the package point at existing anchors.

Docstrings link sections as ``docs/methods.md#<anchor>``; the anchors are GitHub's heading slugs
plus explicit ``<a id="...">`` tags (the registry names).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from poisonlab.attacks import attack_names
from poisonlab.defenses import detector_names
from poisonlab.reports.paper_tables import PAPER_TABLES

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "methods.md"
TEXT = DOC.read_text(encoding="utf-8")


def github_slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces → '-'."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> list[str]:
    """Every anchor of the page: heading slugs and explicit ids, in order (with repeats)."""
    found = [github_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)]
    found += re.findall(r'<a id="([^"]+)"></a>', text)
    return found


ANCHORS = anchors(TEXT)


def test_the_slug_rule_matches_githubs():
    assert github_slug("Objective and forward-backward splitting") == (
        "objective-and-forward-backward-splitting"
    )
    assert github_slug("Bayesian NN uncertainty (MOPED, Flipout)") == (
        "bayesian-nn-uncertainty-moped-flipout"
    )


def test_anchors_are_unique():
    repeated = sorted({a for a in ANCHORS if ANCHORS.count(a) > 1})
    assert repeated == []


def test_every_internal_link_resolves():
    links = re.findall(r"\]\(#([^)]+)\)", TEXT)
    assert links, "the page links its sections"
    assert sorted(set(links) - set(ANCHORS)) == []


@pytest.mark.parametrize("name", sorted({*attack_names(), *detector_names()}))
def test_every_attack_and_defense_has_an_anchor(name):
    assert name in ANCHORS


def test_every_paper_of_the_published_tables_is_referenced():
    references = " ".join(TEXT.split("## References", 1)[1].split())  # lines re-joined
    for table in PAPER_TABLES.values():
        assert table.paper is not None
        assert f"arXiv:{table.paper.arxiv}" in references, table.name
        assert table.paper.title in references, table.name


def test_every_arxiv_id_is_in_the_references():
    body, references = TEXT.split("## References", 1)
    cited = set(re.findall(r"arXiv:(\d{4}\.\d{4,5})", body))
    listed = set(re.findall(r"arXiv:(\d{4}\.\d{4,5})", references))
    assert cited <= listed


PUBLIC = ["src", "tests", "bench", "docs", "experiments", "README.md", "DEVELOPERS.md"]
"""What a user of the repository reads: code, tests, benchmarks, docs and experiment files."""


def public_files() -> list[Path]:
    files = []
    for name in PUBLIC:
        path = ROOT / name
        found = [path] if path.is_file() else sorted(path.rglob("*"))
        files += [p for p in found if p.suffix in (".py", ".toml", ".md") and p.is_file()]
    return files


def test_links_from_the_package_point_at_existing_anchors():
    targets = []
    for path in public_files():
        targets += re.findall(r"docs/methods\.md#([\w-]+)", path.read_text(encoding="utf-8"))
    assert sorted(set(targets) - set(ANCHORS)) == []


def test_the_project_notebook_is_not_cited():
    """Sources are cited by paper (authors, year, arXiv id) and docs/methods.md; the project's
    private notebook and its "seed 00N" numbering mean nothing to a reader of the repository."""
    pattern = re.compile(r"METHODS\.md|METHODS §|/work/shared|\b[Ss]eed\s+(#\s*)?00\d\b")
    cited = []
    for path in public_files():
        if path == Path(__file__).resolve():  # this test spells out what it looks for
            continue
        text = path.read_text(encoding="utf-8")
        for match in pattern.finditer(text):  # also across a line break ("seed\n000")
            cited.append(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}")
    assert cited == []


def test_no_folder_of_the_project_machine_is_recorded():
    """Users never see the machine the results were measured on: a recorded command runs without
    its CPU-lock wrapper, a clone names ``<repo>``, a bench prints paths relative to the repo."""
    cited = []
    for path in [*public_files(), ROOT / "RESULTS.md", ROOT / "Makefile"]:
        if path == Path(__file__).resolve():  # this test spells out what it looks for
            continue
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"/work/", text):
            cited.append(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}")
    assert cited == []
