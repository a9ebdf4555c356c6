"""What the user docs say about the code is true of it: every Python name they cite exists, and
the defaults docs/methods.md states for each attack and defense are the constructors' defaults.

The docs are README.md, DEVELOPERS.md, RESULTS.md and docs/methods.md (tests/docs/
test_methods_doc.py checks the page's links and references).
"""

from __future__ import annotations

import ast
import inspect
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from poisonlab.attacks import attack_names, build_attack
from poisonlab.defenses import build_detector, detector_names
from tests.dotted_names import resolves

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "DEVELOPERS.md", "RESULTS.md", "docs/methods.md"]
METHODS = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")


def cited_names() -> list[tuple[str, str]]:
    """(file:line, name) of every ``poisonlab.x.y`` the docs mention, and of every name their
    code imports (``from poisonlab.x import a, b``)."""
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        for match in re.finditer(r"\bpoisonlab(?:\.[A-Za-z_]\w*)+", text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{doc}:{line}", match.group(0)))
        for match in re.finditer(r"^from (poisonlab[\w.]*) import ([\w, ]+)$", text, re.MULTILINE):
            line = text.count("\n", 0, match.start()) + 1
            for name in match.group(2).split(","):
                found.append((f"{doc}:{line}", f"{match.group(1)}.{name.strip()}"))
    return found


def test_the_name_check_tells_a_moved_function():
    assert resolves("poisonlab.defenses.two_means.reduce_dimensions")
    assert not resolves("poisonlab.defenses.clustering.reduce_dimensions")


def test_every_python_name_the_docs_cite_exists():
    cited = cited_names()
    assert len(cited) > 50
    assert ("README.md", "poisonlab.train.recipes.default_recipe") in {
        (where.split(":")[0], name) for where, name in cited
    }  # the README's code imports are read too
    assert [f"{where} {name}" for where, name in cited if not resolves(name)] == []


def section(anchor: str) -> str:
    """The text of the '## ' section of docs/methods.md that holds ``anchor`` (a heading's slug
    or an explicit ``<a id>``), up to the next '## ' heading."""
    explicit = METHODS.find(f'<a id="{anchor}"></a>')
    if explicit >= 0:
        start = METHODS.index("\n## ", explicit)
    else:
        headings = re.finditer(r"^## (.+)$", METHODS, flags=re.MULTILINE)
        start = next(
            m.start() - 1
            for m in headings
            if re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-") == anchor
        )
    end = METHODS.find("\n## ", start + 1)
    return METHODS[start : end if end >= 0 else len(METHODS)]


def stated_defaults(text: str) -> dict[str, object]:
    """``name=value`` pairs of a section's defaults: its paragraphs starting "**Defaults" before
    any '### ' subsection (a subsection's own "**Defaults" are another function's, e.g. the filter
    and fine-tune loop's), and every subsection whose heading says defaults."""
    main, *subsections = re.split(r"\n(?=### )", text)
    chosen = [p for p in re.split(r"\n\s*\n", main) if p.lstrip().startswith("**Defaults")]
    chosen += [s for s in subsections if "defaults" in s.split("\n", 1)[0].lower()]
    pairs = re.findall(r"`([a-z_]\w*)=([^`]+)`", "\n".join(chosen))
    return {name: ast.literal_eval(value) for name, value in pairs}


def keywords(cls: type) -> list[str]:
    return [
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind is p.KEYWORD_ONLY and name not in ("threshold", "classes")
    ]


BUILT = {
    **{n: build_attack(n) for n in attack_names()},
    **{n: build_detector(n) for n in detector_names()},
}


def test_the_defaults_parser_reads_a_paragraph():
    text = '## X\n\nProse `a=1`.\n\n**Defaults.** `a=2`, `b="pca"`, `c=None`.\n'
    assert stated_defaults(text) == {"a": 2, "b": "pca", "c": None}
    text += "\n### Its loop\n\n**Defaults.** `d=3`.\n\n### X defaults\n\n`e=4`, `f=0.5`.\n"
    assert stated_defaults(text) == {"a": 2, "b": "pca", "c": None, "e": 4, "f": 0.5}


@pytest.mark.parametrize("name", sorted(BUILT))
def test_the_stated_defaults_are_the_constructors(name):
    """Every ``name=value`` of a section's defaults is the value a default-built instance holds
    (budgets and triggers resolved, e.g. BadNets' rate 0.2)."""
    stated = stated_defaults(section(name))
    assert stated, f"docs/methods.md#{name} states no defaults"
    instance = BUILT[name]
    params = keywords(type(instance))
    assert sorted(set(stated) - set(params)) == []
    wrong = {k: (v, getattr(instance, k)) for k, v in stated.items() if getattr(instance, k) != v}
    assert wrong == {}


@pytest.mark.parametrize("name", sorted(detector_names()))
def test_every_keyword_of_a_defense_is_documented(name):
    """A defense's section names each of its keywords as ``keyword=`` (its default or its use)."""
    text = section(name)
    missing = [k for k in keywords(type(BUILT[name])) if f"`{k}=" not in text]
    assert missing == []


def test_the_conventions_name_the_default_threshold():
    flags = METHODS.split("- **Flags**", 1)[1].split("\n- ", 1)[0]
    default = re.search(r"`([\w:.]+)`, the default", flags)
    assert default is not None
    assert default.group(1) == build_detector("spectral-signatures").threshold.describe()


BENCH = ROOT / "bench" / "results"


def one_decimal(value: str) -> str:
    """A file's value to one decimal, halves up as a reader rounds them (99.05 → 99.1)."""
    return str(Decimal(value).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def bench_hc_rows(name: str) -> dict[str, list[str]]:
    """Per rate, the cells the measured-limits table shows for Heatmap Clustering in
    bench/results/NAME: per seed "size (poisons) · ACC / AUROC", then the mean ± sd of ACC and
    AUROC, all to one decimal (sizes from TPR and TNR over the class's poisons and clean coats)."""
    text = (BENCH / name).read_text(encoding="utf-8")
    rows: dict[str, list[str]] = {}
    seed = r"\| (\d+%) \| \d \| HC \| (\d+) / (\d+) \| [\d.]+ \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|"
    for rate, poisons, n, acc, tpr, tnr, auroc in re.findall(seed, text):
        p, clean = int(poisons), int(n) - int(poisons)
        tp, fp = round(float(tpr) * p / 100), round((100 - float(tnr)) * clean / 100)
        cell = f"{tp + fp} ({tp}) · {one_decimal(acc)} / {one_decimal(auroc)}"
        rows.setdefault(rate, []).append(cell)
    pm = r"([\d.]+) ± ([\d.]+)"
    mean = rf"\| (\d+%) \| HC \| [\d.]+ ± [\d.]+ \| {pm} \| {pm} \| {pm} \| {pm} \|"
    for rate, acc, acc_sd, _, _, _, _, auroc, auroc_sd in re.findall(mean, text):
        rows[rate] += [f"{one_decimal(acc)} ± {one_decimal(acc_sd)}"]
        rows[rate] += [f"{one_decimal(auroc)} ± {one_decimal(auroc_sd)}"]
    return rows


def doc_hc_rows(first: str) -> dict[str, list[str]]:
    """The measured-limits table's rows from the one starting with ``first`` to the next
    italic row (or the table's end), keyed by their rate."""
    table = METHODS.split('<a id="heatmap-clustering-limits"></a>', 1)[1]
    lines = [line for line in table.split("\n\n", 2)[1].splitlines() if line.startswith("| ")]
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first}"))
    rows: dict[str, list[str]] = {}
    for line in lines[start:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if rows and cells[0].startswith("*"):
            break
        if not cells[0].startswith("*"):
            rows[cells[0].split()[0]] = cells[1:]
    return rows


@pytest.mark.parametrize(
    ("first", "name"),
    [("33% (", "heatmap_table1.md"), ("*farthest", "heatmap_table1_farthest.md")],
)
def test_the_heatmap_clustering_limits_table_is_its_bench_files(first, name):
    """docs/methods.md's measured limits of Heatmap Clustering are the numbers of the bench files
    it cites, as they stand (a rerun of the bench changes the page too)."""
    assert doc_hc_rows(first) == bench_hc_rows(name)


def test_the_verdict_giving_defenses_are_named():
    """docs/methods.md's "Verdicts" section lists every defense that gives per-class verdicts."""
    listed = METHODS.split("(`gives_verdicts`:", 1)[1].split(")", 1)[0]
    giving = [n for n in detector_names() if BUILT[n].gives_verdicts]
    assert len(giving) >= 3
    assert [n for n in giving if n not in listed] == []
