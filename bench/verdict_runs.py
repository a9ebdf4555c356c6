"""Saving, replaying and summarising the runs of ``python -m bench verdicts``.

``save_run`` keeps one run's scores, verdicts, features and decision (``--save``);
``replay`` re-decides saved runs with the current combination (``--replay``), with no training;
``summarise`` turns runs, fresh or replayed, into the targets, calibration and victims tables.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch

from bench.common import markdown_table
from poisonlab.defenses import Evidence
from poisonlab.defenses.fusion import combine

OURS = ("activation-clustering", "raw-clustering", "spectral-signatures")
"""The verdict-giving members the bench runs, in the order of the tables."""

UNCHECKED = "combined, no held-out check"
"""The method row of the combined decision with the held-out check undone (``--holdout``)."""


def save_run(
    folder: str, name: str, evidence: Evidence, results: list[Any], decision: Any, out: dict
) -> None:
    """``folder/name.npz`` (truth, labels, features, every member's scores, verdict scores and
    flags, the combined score and removal, ART's two detectors' flags) and ``folder/name.json`` (verdicts, decision, ASR)."""
    import json
    from pathlib import Path

    Path(folder).mkdir(parents=True, exist_ok=True)
    arrays = {
        "truth": out["truth"],
        "labels": out["labels"],
        "features": evidence.features().float().cpu().numpy(),
        "combined_score": decision.score.numpy(),
        "combined_removed": decision.removed.numpy(),
        **{key: out[method][0] for method, key in ART_ARRAYS.items()},
    }
    for r in results:
        arrays[f"{r.detector}/scores"] = r.scores.numpy()
        arrays[f"{r.detector}/flagged"] = r.flagged.numpy()
        if r.verdict_scores is not None:
            arrays[f"{r.detector}/verdict_scores"] = r.verdict_scores.numpy()
    np.savez_compressed(Path(folder) / f"{name}.npz", **arrays)
    meta = {
        "asr": out["asr"],
        "classes": out["classes"],
        "verdicts": {r.detector: [v.to_dict() for v in r.verdicts] for r in results},
        "extras": {r.detector: r.extras for r in results},
        "decision": decision.to_dict(),
    }
    text = json.dumps(meta, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    (Path(folder) / f"{name}.json").write_text(text)


ART_ARRAYS = {
    "ART ActivationDefence": "art_activation_defence",
    "ART SpectralSignatureDefense": "art_spectral_signature_defense",
}


def recut(
    name: str, verdicts: tuple[Any, ...], tested: Any, labels: Any, flagged: Any
) -> tuple[tuple[Any, ...], Any]:
    """The member's saved verdicts and flags with every named class cut again by the current
    break test (its k̂, cut-off and trailing members from the saved verdict scores,
    :func:`~poisonlab.defenses.verdicts.take_trailing`), the p-values, confirmations and held-out
    checks kept. For runs saved while the tests judged the group above the largest spacing, as
    they do now, this is what a rerun would give, without retraining."""
    from dataclasses import replace

    from poisonlab.defenses import build_detector
    from poisonlab.defenses.thresholds import VerdictRule
    from poisonlab.defenses.verdicts import take_trailing, top_in_class

    cls = type(build_detector(name))
    scale = cls._verdict_scale
    alpha = VerdictRule.alpha
    out = []
    flagged = flagged.clone()
    for v in verdicts:
        if v.poisoned:
            idx = (labels == v.label).nonzero().flatten()
            idx = idx[~torch.isnan(tested[idx])]
            test = cls._break_test(alpha) if v.stage == 1 else cls._escalation_test(alpha)
            found = test.statistic(scale(tested[idx]))
            if found is not None:
                k, deep = found[1], found[4]
                group = top_in_class(tested, labels, v.label, k)
                v = replace(v, suspects=k, cutoff=float(tested[group[-1]]), trailing=deep - k)
                flagged[idx] = False
                flagged[group] = True
        out.append(v)
    return take_trailing(out, flagged, tested, labels)


def replay_run(
    npz: Any, meta: dict[str, Any], recut_classes: bool = False
) -> tuple[dict[str, Any], bool]:
    """One saved run (``save_run``'s arrays and JSON) through the current ``combine``: the run in
    ``summarise``'s form and whether the decision equals the saved one. With ``recut_classes``,
    every member's named classes are cut again by the current break test (:func:`recut`)."""
    from poisonlab.defenses.base import DetectionResult
    from poisonlab.defenses.verdicts import ClassVerdict

    labels = torch.from_numpy(npz["labels"])
    results = []
    out: dict[str, Any] = {
        "truth": npz["truth"],
        "classes": meta["classes"],
        "labels": npz["labels"],
        "asr": meta["asr"],
    }
    for name in OURS:
        scores = torch.from_numpy(npz[f"{name}/scores"])
        key = f"{name}/verdict_scores"
        verdicts = tuple(ClassVerdict(**v) for v in meta["verdicts"][name])
        tested = torch.from_numpy(npz[key]) if key in npz else scores
        flagged = torch.from_numpy(npz[f"{name}/flagged"])
        if recut_classes:  # the member's own rows then show its new cut too
            verdicts, flagged = recut(name, verdicts, tested, labels, flagged)
        result = DetectionResult(
            detector=name,
            params={},
            scores=scores,
            flagged=flagged,
            analysed=~torch.isnan(scores),
            threshold={},
            seconds=0.0,
            verdicts=verdicts,
            verdict_scores=torch.from_numpy(npz[key]) if key in npz else None,
        )
        results.append(result)
        out[name] = (result.flagged.numpy(), result.poisoned_classes, result.verdicts)
    decision = combine(results, labels)
    out["combined"] = (decision.removed.numpy(), decision.poisoned_classes, decision.per_class)
    for method, key in ART_ARRAYS.items():
        if key in npz:  # runs saved before the ART flags were kept have none
            out[method] = (npz[key], None, None)
    same = bool(
        np.array_equal(decision.removed.numpy(), npz["combined_removed"])
        and decision.poisoned_classes == meta["decision"]["poisoned_classes"]
    )
    return out, same


def replay(folders: list[str], combinations: bool = False, recut_classes: bool = False) -> str:
    """The tables of every run saved in ``folders`` under the current combination (module
    docstring), with how many saved decisions it reproduces; ``combinations`` adds the table of
    :mod:`bench.verdict_combinations` over the same runs; ``recut_classes`` cuts every member's
    named classes again with the current break test (:func:`recut`)."""
    import json
    from pathlib import Path

    from poisonlab.defenses.verdicts import ClassVerdict

    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    kept = []
    same = 0
    paths = sorted(path for folder in folders for path in Path(folder).glob("*.json"))
    if not paths:
        raise SystemExit(f"--replay: no saved runs (*.json with their .npz) in {folders}")
    for path in paths:
        cell = path.stem.rsplit("-s", 1)[0]
        meta = json.loads(path.read_text())
        with np.load(path.with_suffix(".npz")) as npz:
            arrays = {key: npz[key] for key in npz.files if key != "features"}
        run, equal = replay_run(arrays, meta, recut_classes)
        runs[f"{path.parent.name}/{cell}"].append(run)
        same += equal
        verdicts = {name: [ClassVerdict(**v) for v in meta["verdicts"][name]] for name in OURS}
        kept.append((f"{path.parent.name}/{path.stem}", arrays, verdicts))
    table, calibration, _ = summarise(runs)
    text = [
        f"Replay of {len(paths)} saved runs through the current combination: "
        f"{same} of {len(paths)} decisions equal to the saved ones.",
        "", table, "", "False alarms: clean classes named, over every clean class of every run.",
        "", calibration,
    ]  # fmt: skip
    if combinations:
        from bench.verdict_combinations import compare, dependence_simulation

        text += ["", "Other combinations of the member p-values (bench/verdict_combinations.py):",
                 "", compare(kept, OURS), "",
                 "Rejection rate of one clean class at α / 10, three uniform p-values of pairwise "
                 "correlation ρ (Gaussian copula, 10⁶ draws), in multiples of the level:", "",
                 dependence_simulation()]  # fmt: skip
    return "\n".join(text)


def named_classes(run: dict[str, Any], method: str) -> list[int]:
    """Classes a method names: ours, the verdicts; ART's detectors (no verdicts), every class in
    which they flagged a sample."""
    flags, named, _ = run[method]
    if named is not None:
        return sorted(named)
    return sorted(np.unique(run["labels"][flags]).tolist())


def summarise(runs: dict[str, list[dict[str, Any]]]) -> tuple[str, str, str]:
    """The targets table, the calibration table and the victims table."""
    every = [*OURS, "combined", UNCHECKED, *ART_ARRAYS]
    methods = [m for m in every if all(m in run for cell in runs.values() for run in cell)]

    def spread(values: list[float]) -> str:
        v = 100 * np.asarray(values)
        return f"{v.mean():.1f} ({v.min():.1f}–{v.max():.1f})"

    rows = []
    false_names: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for cell, cell_runs in runs.items():
        for method in methods:
            tpr, fpr, right = [], [], 0
            for run in cell_runs:
                flags = run[method][0]
                truth = run["truth"]
                if truth.any():
                    tpr.append(float(flags[truth].mean()))
                fpr.append(float(flags[~truth].mean()))
                named = named_classes(run, method)
                right += named == sorted(run["classes"])
                clean_classes = set(np.unique(run["labels"]).tolist()) - set(run["classes"])
                false_names[method][0] += len(set(named) & clean_classes)
                false_names[method][1] += len(clean_classes)
            rows.append(
                [
                    cell,
                    method,
                    spread(tpr) if tpr else "—",
                    spread(fpr),
                    f"{right}/{len(cell_runs)}",
                ]
            )
    table = markdown_table(
        ["cell", "method", "poisons removed %", "clean removed %", "right classes named"], rows
    )
    calibration = markdown_table(
        ["method", "clean classes named", "clean classes tested", "rate %"],
        [[m, str(a), str(b), f"{100 * a / max(b, 1):.2f}"] for m, (a, b) in false_names.items()],
    )
    victims = markdown_table(
        ["cell", "poisons per run", "attack success %"],
        [
            [
                cell,
                "/".join(str(int(r["truth"].sum())) for r in cell_runs),
                "—" if cell == "clean" else spread([r["asr"] for r in cell_runs]),
            ]
            for cell, cell_runs in runs.items()
        ],
    )
    return table, calibration, victims
