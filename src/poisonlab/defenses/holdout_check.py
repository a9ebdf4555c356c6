"""The held-out check: is a named group a genuine mode that clean data share as well.

A class's per-class verdict (:mod:`poisonlab.defenses.verdicts`) names a group that stands above a
break in the detector's within-class scores, and exclusionary reclassification
(:mod:`poisonlab.defenses.reclassification`) then asks whether a model trained without the group
still calls it by its label. A genuine minority mode that the model never learns to generalise to
(1s written like 2s, on 8×8 digits) fails that second question as a poison group does: the
retrained model calls it another class. What separates the two is where else the group occurs.
Poisons exist only in the suspect data; a genuine mode occurs in clean data of the class at about
the same rate. So when a clean held-out set is given (``Evidence(holdout=...)``, ``poisonlab scan
--holdout``), the held-out samples of a named class are scored by the detector's fitted state
(the same projection, the same cut-off) and counted.

**The rule.** A class named with k̂ suspects among its n scored samples holds the group at the
rate π = k̂ / n. Of its m clean held-out samples, h score at or above the verdict's cut-off. The
group is a genuine mode, and the class is cleared, when both

- *no deficit*: P(Binomial(m, π) ≤ h) > β, the held-out data hold the group about as often as the
  suspect data (a poison group leaves a deficit: its poisons are missing from clean data); and
- *present*: P(Binomial(m, π₀) ≥ h) ≤ β with π₀ = (k̂ / 4) / (n − 3 k̂ / 4), more held-out
  samples pass the cut than if at most a quarter of the group were clean samples (a group at
  least three quarters poisons leaves at most k̂ / 4 clean samples above its cut among the at
  most n − 3 k̂ / 4 clean samples of the class: the rate π₀ = π / (4 − 3π), a little above π / 4),

with β the verdict's ``alpha`` (0.05 by default). The second condition makes the check clear a
class only on evidence: with few held-out samples of the class (m π₀ well below 1, e.g. a
held-out set of a few per class) it cannot pass, and the verdict stays that of the test and the
reclassification alone. The first keeps a class whose cut holds poisons among many clean samples
(the deficit is then significant on a large held-out set): such a group is more than a mode.

Measured (bench/results/verdicts.md, "The held-out check"): on 8×8 digits with a fifth of the set
held out, the genuine modes that the reclassification let through (groups of 1s, a group of 9s)
had h = 9-10 of 36 held-out samples above their cut, the 158 named groups holding poisons h ≤ 2.

Limits: the held-out set must be clean and drawn like the suspect data (another writer population
or camera would change the modes' rates). A part split off the suspect data itself is not clean:
it holds the poisons at their rate, so every poison group would pass as a mode and be cleared.
Detectors that cannot score new samples with their verdict's statistic (Heatmap Clustering's
silhouettes) get no check.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from scipy.stats import binom
from torch import Tensor

from poisonlab.defenses.verdicts import ClassVerdict

#: A group that passes the "present" condition holds more held-out samples than one of which at
#: least this share were poisons would (module docstring).
POISON_SHARE = 0.75


def clean_rate_if_poisons(suspects: int, n: int) -> float:
    """π₀ of the "present" condition: the share of the clean samples of a class of ``n`` above
    the cut of a group of ``suspects`` of which :data:`POISON_SHARE` are poisons, (k̂/4) / (n −
    3k̂/4). The poisons are not among the clean samples, so the rate is over n − 3k̂/4 of them,
    not n (π/4 would understate it, and let the check clear a poison group on fewer held-out
    samples above its cut)."""
    poisons = POISON_SHARE * suspects
    return (suspects - poisons) / (n - poisons)


def held_out_mode(verdict: ClassVerdict, held_scores: Tensor, beta: float) -> dict[str, Any] | None:
    """The check of one named class against its held-out samples' verdict scores (module
    docstring): a JSON-ready dict with ``mode`` True when the group is a genuine mode (with
    ``skipped`` saying why when the held-out set has no sample of the class: the class stays
    named, and summary.json says the check could not run), or None without a cut-off."""
    scored = held_scores[~torch.isnan(held_scores)]
    if verdict.cutoff is None or verdict.n == 0:
        return None
    m = len(scored)
    if m == 0:
        return {
            "test": "held-out share",
            "held_out": 0,
            "mode": False,
            "skipped": "the held-out set has no sample of this class",
        }
    h = int((scored >= verdict.cutoff).sum())
    rate = verdict.suspects / verdict.n
    p_deficit = float(binom.cdf(h, m, rate))
    p_present = float(binom.sf(h - 1, m, clean_rate_if_poisons(verdict.suspects, verdict.n)))
    return {
        "test": "held-out share",
        "held_out": m,
        "above_cutoff": h,
        "expected": round(m * rate, 3),
        "p_deficit": p_deficit,
        "p_present": p_present,
        "mode": p_deficit > beta and p_present <= beta,
    }


def check_held_out(
    verdicts: tuple[ClassVerdict, ...],
    flags: Tensor,
    labels: Tensor,
    held_scores: Tensor,
    held_labels: Tensor,
    beta: float,
) -> tuple[tuple[ClassVerdict, ...], Tensor]:
    """The held-out check of every class the verdicts name: each gets its ``holdout`` record,
    and a class whose group is a genuine mode is cleared (``poisoned`` False, its flags dropped).

    ``held_scores`` are the held-out samples' scores on the scale of the verdicts' cut-offs
    (NaN where not scored), ``held_labels`` their claimed classes; ``labels`` and ``flags`` are
    the suspect data's. Returns the verdicts and flags.
    """
    flags = flags.clone()
    checked = []
    for verdict in verdicts:
        if verdict.poisoned:
            record = held_out_mode(verdict, held_scores[held_labels == verdict.label], beta)
            if record is not None:
                verdict = replace(verdict, holdout=record, poisoned=not record["mode"])
                if record["mode"]:
                    flags[labels == verdict.label] = False
        checked.append(verdict)
    return tuple(checked), flags
