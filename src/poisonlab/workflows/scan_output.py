"""The files a scan leaves behind: scores.csv, summary.json and clean.npz.

Kept apart from :mod:`poisonlab.workflows.scan` so the pipeline stays free of file formats. Formats:

* ``scores.csv``: one row per input sample, in input order: ``index``, ``id`` (the sample's
  source id, e.g. ``data.npz#41``), ``label`` (claimed class), then per defense that ran
  ``<defense>_score`` (empty where the defense did not analyse the sample) and
  ``<defense>_flagged`` (0/1), then ``combined_score`` (the mean within-class rank percentile
  over the defenses that give class verdicts, empty where none analysed the sample) and
  ``removed`` (0/1, the decision that made clean.npz).
* ``summary.json``: leads with ``verdict`` (one sentence: which classes look poisoned, how many
  suspicious samples, which look clean) and ``decision`` (the rule, its members and the
  defenses left out with the reason, the classes named, per class the combined p-value, who named
  it, the samples removed and the cut-off) and ``clean`` (the clean set's kept/removed counts),
  then per defense its status (ran / skipped with the reason), role in the decision, per-class
  verdicts, threshold with the cut-off used per class (on the scores the flags were cut from:
  ``cutoff_scores`` says "verdict_scores" when the verdicts decided on their own ranking, as
  Activation Clustering's Fisher projections), parameters, flags per class, run time and small
  extras, and ``selection`` (the defenses selected, ``from`` "default" when none was
  named, "all" or "named", and why); then the threshold, the dataset (and ``source``, where it
  was read) and held-out set, the models used, the thread settings and the versions
  (``poisonlab``, ``torch`` as torch reports it, ``versions`` of every package that can change
  the numbers).
* ``clean.npz``: :meth:`ScanResult.clean` (the decision's kept samples) written by
  :func:`poisonlab.data.save_npz`, so
  ``load_dataset`` reads it back; ``kept_index`` (each kept sample's row in the input) is stored
  beside it, and ``is_poison`` of the kept samples when the scanned data carried it (so a scan of
  clean.npz reports the poisons that stayed).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from poisonlab import __version__
from poisonlab.data.dataset import save_npz
from poisonlab.errors import ConfigError
from poisonlab.validation import short_repr
from poisonlab.versions import package_versions
from poisonlab.workflows.scan import UNION_RULE, ScanResult


def _compact(extras: Mapping[str, Any], n: int) -> dict[str, Any]:
    """Detector extras for summary.json, with per-sample arrays (length ``n``) left out."""
    out: dict[str, Any] = {}
    for key, value in extras.items():
        per_sample = isinstance(value, Tensor | np.ndarray | list) and n > 1 and len(value) == n
        out[key] = f"<{n} per-sample values omitted>" if per_sample else value
    return out


def jsonable(value: Any) -> Any:
    """Tensors, arrays, tuples and non-finite floats turned into plain JSON values (NaN → null)."""
    if isinstance(value, Tensor | np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def scan_summary(result: ScanResult) -> dict[str, Any]:
    """The JSON-ready content of summary.json."""
    data = result.data
    k = data.num_classes
    decision = result.decision
    defenses: dict[str, Any] = {}
    for o in result.outcomes:
        if o.result is None:
            defenses[o.name] = {"status": "skipped", "reason": o.skipped}
            continue
        r = o.result
        role = "member of the decision"
        if decision is not None and decision.rule == "union":  # its flags are removed too
            role = "member of the decision (union: its flags are removed)"
        elif decision is not None and o.name in decision.excluded:
            role = "reported only: " + decision.excluded[o.name]
        defenses[o.name] = {
            "status": "ran",
            "role": role,
            "model": o.model_role,
            "verdicts": [v.to_dict() for v in r.verdicts],
            "threshold": r.threshold,
            "parameters": r.params,
            "analysed": int(r.analysed.sum()),
            "flagged": int(r.flagged.sum()),
            "flagged_per_class": r.flagged_per_class(data.labels, k),
            "seconds": round(r.seconds, 4),
            "extras": _compact(r.extras, len(data)),
            "notes": list(o.notes),
        }
    removed = int(result.removed.sum())
    holdout = result.holdout
    rule = UNION_RULE if decision is None or decision.rule == "union" else decision.rule
    return jsonable(
        {  # what a reader looks for first: the verdict, the decision, then per defense
            "verdict": result.verdict,
            "decision": decision.to_dict() if decision else None,
            "clean": {
                "rule": rule,
                "kept": len(data) - removed,
                "removed": removed,
                "union_would_remove": int(result.flagged_any.sum()),
            },
            "defenses": defenses,
            "selection": result.selection,
            "threshold": result.threshold,
            "dataset": {
                "name": data.name,
                "size": len(data),
                "num_classes": k,
                "class_names": list(data.class_names),
                "image_shape": list(data.shape),
                "class_counts": data.class_counts(),
            },
            "holdout": None if holdout is None else {"name": holdout.name, "size": len(holdout)},
            "models": [m.to_dict() for m in result.models],
            "settings": result.settings,
            "poisonlab": __version__,
            "torch": torch.__version__,
            # every package that can change the numbers, as experiment cells record them
            "versions": package_versions(),
            "seconds": round(result.seconds, 3),
        }
    )


def write_scan(
    result: ScanResult,
    directory: str | Path,
    *,
    is_poison: np.ndarray | None = None,
    source: str | None = None,
) -> dict[str, Path]:
    """Write scores.csv, summary.json and clean.npz (module docstring) into ``directory``;
    ``is_poison`` (bool, one per scanned sample: the data's ground truth, when it has one) goes
    into clean.npz for the kept samples. ``source`` (a path or data name that
    :func:`poisonlab.data.load_dataset` loads) is recorded as summary.json's
    ``dataset.source``, where ``poisonlab report`` finds the scanned images again.

    ``directory`` is created when missing (with its parents); files of these three names in it
    are replaced (the CLI writes into a temporary folder from
    :func:`poisonlab.cli.output.output_folder` and swaps it in on success, so it never replaces
    a user's files). Returns the three paths by kind.
    """
    if not isinstance(result, ScanResult):  # checked before the folder is made
        raise ConfigError(
            f"write_scan result must be a ScanResult (from poisonlab.scan.scan), got "
            f"{type(result).__name__} {short_repr(result)}"
        )
    if is_poison is not None:
        is_poison = np.asarray(is_poison)
        if is_poison.shape != (len(result.data),) or is_poison.dtype != bool:
            raise ConfigError(
                f"write_scan is_poison must be a bool array of one value per scanned sample "
                f"({len(result.data)}), got {is_poison.dtype} of shape {is_poison.shape}"
            )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ran = result.ran
    paths = {
        "scores": directory / "scores.csv",
        "summary": directory / "summary.json",
        "clean": directory / "clean.npz",
    }
    header = ["index", "id", "label"]
    for outcome in ran:
        header += [f"{outcome.name}_score", f"{outcome.name}_flagged"]
    columns = [(o.result.scores.tolist(), o.result.flagged.tolist()) for o in ran]  # type: ignore[union-attr]
    header += ["combined_score", "removed"]
    decision = result.decision
    combined = decision.score.tolist() if decision is not None else [math.nan] * len(result.data)
    removed = result.removed.tolist()
    with paths["scores"].open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")  # not csv's \r\n: grep ',1$' finds rows
        writer.writerow(header)
        for i, (sample_id, label) in enumerate(
            zip(result.data.ids.tolist(), result.data.labels.tolist(), strict=True)
        ):
            row: list[object] = [i, sample_id, label]
            for scores, flags in columns:
                row += ["" if math.isnan(scores[i]) else f"{scores[i]:.10g}", int(flags[i])]
            row += ["" if math.isnan(combined[i]) else f"{combined[i]:.6g}", int(removed[i])]
            writer.writerow(row)
    summary = scan_summary(result)
    if source is not None:
        summary["dataset"]["source"] = str(source)
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    kept = (~result.removed).nonzero().flatten()
    extra = {"kept_index": kept.numpy()}
    if is_poison is not None:
        extra["is_poison"] = is_poison[kept.numpy()]
    save_npz(result.clean(), paths["clean"], **extra)
    return paths
