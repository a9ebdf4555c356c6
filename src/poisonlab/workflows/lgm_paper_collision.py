"""Yaseen et al. 2020's poisoning setting, ready-made: 100 feature-collision poisons against a CE
and an LGM model.

Yaseen, Aadil, Sargsyan, "Preventing Clean Label Poisoning using Gaussian Mixture Loss" (arXiv:2003.00798),
code muneebaadil/likelihoods-for-poison ``code/poisoning.py`` and ``code/scripts.sh``
(docs/methods.md#lgm-paper-variant): the poisons are crafted on the test split (the fine-tuning set
D_f), which also supplies the random targets and bases; β0 = 0.0083 with the (2048/D_in)² scaling on
the [-1, 1] pixel scale, λ = 3.825e7, 1000 iterations, the every-iteration step rule, stop when the
objective falls below 1e-4, and features min-max normalised to [-1, 1] over that split
(``--normalize_feats``). The same (target, base) pairs are used against both models, so their
perturbations compare pair by pair. The paper reports no success rate, only that poisons against the
LGM model look visibly perturbed (its Fig. 3); :meth:`Seed000Result.summary` gives the numbers
behind that comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from poisonlab.attacks.base import PoisonedDataset
from poisonlab.attacks.feature_collision import FeatureCollision, choose_pairs
from poisonlab.data.dataset import ImageDataset

SEED000_SETTINGS: dict[str, Any] = {
    "num_targets": 100,
    "bases_per_target": 1,
    "base_selection": "random",
    "watermark": 0.0,
    "normalize_features": True,
    "beta0": 0.0083,
    "beta_scaling": "paper",
    "pixel_scale": 2.0,
    "lr": 3.825e7,
    "max_iter": 1000,
    "decay": 0.5,
    "step_rule": "every-iteration",
    "obj_threshold": 1e-4,
}
"""Yaseen et al. 2020's hyper-parameters as FeatureCollision keyword arguments."""


def _relative_size(poisons: torch.Tensor, bases: torch.Tensor) -> float:
    """Mean of ||p − b||₂ / ||b||₂ over the pairs (an all-zero base is left out)."""
    base_norm = bases.flatten(1).norm(dim=1)
    ratio = (poisons - bases).flatten(1).norm(dim=1) / base_norm
    return float(ratio[base_norm > 0].mean())


def seed000_attack(**overrides: Any) -> FeatureCollision:
    """A FeatureCollision configured as Yaseen et al. 2020, with any keyword overridden (e.g.
    max_iter)."""
    return FeatureCollision(**{**SEED000_SETTINGS, **overrides})


@dataclass(frozen=True, eq=False)
class Seed000Result:
    """Poisons crafted with one set of (target, base) pairs against the CE and the LGM model."""

    ce: PoisonedDataset
    lgm: PoisonedDataset

    def summary(self) -> dict[str, dict[str, float]]:
        """Per model: mean/median ||p − b||₂ ([0, 1] and 0–255 units), the mean of ||p − b||₂ /
        ||b||₂ (how visible the change is next to the image itself), mean L∞, median distance
        ratio, and the fraction of pairs where the LGM poison moved further than the CE one."""
        out: dict[str, dict[str, float]] = {}
        for name, result in (("ce", self.ce), ("lgm", self.lgm)):
            l2 = torch.as_tensor(result.extras["perturbation_l2"], dtype=torch.float64)
            poisons = result.dataset.images[result.is_poison].double()
            bases = result.dataset.images[result.extras["base_index"]].double()
            out[name] = {
                "l2_mean": float(l2.mean()),
                "l2_median": float(l2.median()),
                "l2_mean_255": float(l2.mean() * 255),
                "l2_relative_mean": _relative_size(poisons, bases),
                "linf_mean": float((poisons - bases).abs().flatten(1).amax(1).mean()),
                "ratio_median": float(torch.as_tensor(result.extras["distance_ratio"]).median()),
                "iterations_mean": float(
                    torch.as_tensor(result.extras["iterations"]).double().mean()
                ),
            }
        lgm, ce = (torch.as_tensor(r.extras["perturbation_l2"]) for r in (self.lgm, self.ce))
        larger = lgm > ce
        out["pairs"] = {"lgm_larger_fraction": float(larger.double().mean()), "n": len(larger)}
        return out


def run_seed000(
    ce_model: nn.Module,
    lgm_model: nn.Module,
    data: ImageDataset,
    *,
    generator: torch.Generator,
    **overrides: Any,
) -> Seed000Result:
    """Craft Yaseen et al. 2020's poisons on ``data`` (the test split) against both models, same
    pairs.

    Parameters
    ----------
    ce_model, lgm_model : nn.Module
        The cross-entropy and the LGM-trained network (Yaseen et al. 2020: the same architecture).
    data : ImageDataset
        The split that is poisoned and supplies targets and bases (Yaseen et al. 2020: the test
        split).
    generator : torch.Generator
        Draws the pairs.
    **overrides
        FeatureCollision keywords replacing Yaseen et al. 2020's values (e.g. ``num_targets=20``).
    """
    attack = seed000_attack(**overrides)
    return craft_on_same_pairs(attack, ce_model, lgm_model, data, generator=generator)


def craft_on_same_pairs(
    attack: FeatureCollision,
    ce_model: nn.Module,
    lgm_model: nn.Module,
    data: ImageDataset,
    *,
    generator: torch.Generator,
) -> Seed000Result:
    """Draw (target, base) pairs once from ``data``, then craft ``attack``'s poisons on those
    same pairs against each model, so the CE and LGM perturbations compare pair by pair."""
    targets, bases = choose_pairs(
        data.labels,
        data.labels,
        num_targets=attack.num_targets,
        bases_per_target=attack.bases_per_target,
        generator=generator,
        target_class=attack.target_class,
        base_class=attack.base_class,
    )
    results = [
        attack.poison(
            data, generator=generator, model=model, target_index=targets, base_index=bases
        )
        for model in (ce_model, lgm_model)
    ]
    return Seed000Result(ce=results[0], lgm=results[1])
