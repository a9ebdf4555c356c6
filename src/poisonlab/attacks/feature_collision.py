"""Feature-collision clean-label poisoning ("Poison Frogs"), many poisons crafted as one batch.

Shafahi et al., "Poison Frogs! Targeted Clean-Label Poisoning Attacks on Neural Networks", NeurIPS
2018 (arXiv:1804.00792); Yaseen et al. 2020 (Yaseen, Aadil, Sargsyan) applies it to MNIST models
trained with cross-entropy and with the LGM loss.

For each target t (a test image the attacker wants misclassified) the attack takes k base images b
of another class and perturbs them into poisons p whose features collide with f(t) while the
images stay close to b (see :mod:`poisonlab.attacks.collision_craft` for the optimisation and its
units). The poisons keep their base labels (clean label) and are appended to the training set.
Success is measured later, after a victim retrains (:mod:`poisonlab.workflows.collision_eval`): the
target is predicted as the base class.

Assumptions and limits: white-box access to the feature extractor; one base class per target; the
poisons are new rows (the unperturbed bases stay in the training set). The official code's retry
with the next base when the final feature distance exceeds 3.5 is not done.
"""

from __future__ import annotations

from numbers import Real
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from poisonlab.attacks.base import Attack, PoisonedDataset, register_attack
from poisonlab.attacks.collision_craft import (
    SETTINGS_CONSTRAINTS,
    WATERMARK_MODES,
    CollisionSettings,
    craft_poisons,
    feature_extractor,
)
from poisonlab.data.dataset import ImageDataset, concatenate
from poisonlab.errors import BudgetError, ConfigError
from poisonlab.ranges import counted
from poisonlab.validation import (
    CLASS_INDEX,
    POSITIVE_INT,
    Boolean,
    ConstraintList,
    Interval,
    Options,
    short_repr,
    validate_params,
)

BASE_SELECTIONS = ("random", "closest")


def choose_pairs(
    target_labels: Tensor,
    base_labels: Tensor,
    *,
    num_targets: int,
    bases_per_target: int,
    generator: torch.Generator,
    target_class: int | None = None,
    base_class: int | None = None,
    target_features: Tensor | None = None,
    base_features: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Yaseen et al. 2020's pair choice: a random target, a random base class ≠ its class, random
    bases.

    Targets are drawn without replacement from the target pool (optionally only ``target_class``);
    for each, the base class is drawn uniformly from the classes other than the target's that still
    hold ``bases_per_target`` unused images (or is ``base_class``), and the bases are drawn without
    replacement, never reused across targets. With ``target_features`` (Nt, D) and ``base_features``
    (Nb, D) the bases are instead the unused images of that class closest to the target in feature
    space (the official code's choice). Yaseen et al. 2020 draws the base class with probability
    proportional to its size; on balanced data the two coincide.

    Returns
    -------
    target_index : Tensor (T,), int64, rows of the target pool
    base_index : Tensor (T, k), int64, rows of the base pool

    Raises
    ------
    BudgetError
        When the pools cannot supply the requested targets or distinct bases.
    """
    pool = torch.arange(len(target_labels))
    if target_class is not None:
        pool = pool[target_labels == target_class]
    if len(pool) < num_targets:
        raise BudgetError(
            f"{counted(num_targets, 'target')} requested but the target pool holds only {len(pool)}"
            + (f" images of class {target_class}" if target_class is not None else " images")
        )
    targets = pool[torch.randperm(len(pool), generator=generator)[:num_targets]]
    unused = torch.ones(len(base_labels), dtype=torch.bool)
    chosen: list[Tensor] = []
    for row in targets.tolist():
        label = int(target_labels[row])
        counts = torch.bincount(base_labels[unused], minlength=int(base_labels.max()) + 1)
        classes = [
            c
            for c in range(len(counts))
            if c != label and counts[c] >= bases_per_target and base_class in (None, c)
        ]
        if not classes:
            raise BudgetError(
                f"no base class other than {label} has {bases_per_target} unused images left "
                f"for target {len(chosen) + 1} of {num_targets}"
            )
        cls = classes[int(torch.randint(len(classes), (1,), generator=generator))]
        members = (unused & (base_labels == cls)).nonzero().flatten()
        if target_features is not None and base_features is not None:
            gap = torch.linalg.vector_norm(base_features[members] - target_features[row], dim=1)
            picks = members[gap.argsort()[:bases_per_target]]
        else:
            picks = members[torch.randperm(len(members), generator=generator)[:bases_per_target]]
        unused[picks] = False
        chosen.append(picks)
    return targets, torch.stack(chosen)


def _pool_features(model: nn.Module, images: Tensor, layer: str, batch: int = 512) -> Tensor:
    """Features of ``images`` at ``layer``, (N, D) on the CPU in float64."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    with torch.no_grad(), feature_extractor(model, layer) as extract:
        parts = [
            extract(images[i : i + batch].to(device, dtype)).double().cpu()
            for i in range(0, len(images), batch)
        ]
    return torch.cat(parts)


def minmax_feature_weights(features: Tensor) -> Tensor:
    """Yaseen et al. 2020's feature normalisation as weights on differences: 2 / (max − min) per
    dimension.

    Mapping each feature to [-1, 1] with min/max over a data set scales every difference by
    2/(max − min); constant dimensions (range 0) keep weight 1.
    """
    span = features.amax(0) - features.amin(0)
    return torch.where(span > 0, 2.0 / span.clamp_min(1e-30), torch.ones_like(span))


@register_attack("feature-collision")
class FeatureCollision(Attack):
    """Poison Frogs feature collision: k clean-label poisons for each of T targets, crafted at once.

    Parameters
    ----------
    num_targets : int
        Number of targets T (drawn from ``test`` when given, else from the training set).
    bases_per_target : int
        Poisons per target k (1 = the paper's one-shot kill; 50 for end-to-end training).
    target_class, base_class : int or None
        Restrict targets to one class and/or force the base class (None: random, Yaseen et al.
        2020).
    base_selection : {"random", "closest"}
        Random base images (Yaseen et al. 2020) or the base-class images closest to the target in
        features.
    watermark : float
        Opacity γ in [0, 1) of the target watermark (paper: up to 0.3 for end-to-end training).
    watermark_mode : {"blend", "additive"}
        "blend": base ← γ·t + (1−γ)·b before optimising (the paper); "additive": p ← clip(p + γ·t)
        after it (IBM ART). Perturbation sizes are always measured against the original base.
    normalize_features : bool
        Yaseen et al. 2020's ``--normalize_feats``: feature differences are scaled to the [-1, 1]
        range the
        features span on the (clean) training set given to :meth:`poison`.
    beta0, beta_scaling, lr, pixel_scale, max_iter, decay, step_rule, objective, num_old_obj,
    check_every, stop_tol, obj_threshold, layer, batch_size :
        Optimisation settings, documented (with units) in
        :class:`~poisonlab.attacks.collision_craft.CollisionSettings`; defaults are Yaseen et al.
        2020's.
    """

    name = "feature-collision"
    needs_model = True
    # The optimisation settings are CollisionSettings' fields, checked there (same owner name).
    _parameter_constraints: ClassVar[dict[str, ConstraintList]] = {
        "num_targets": [POSITIVE_INT],
        "bases_per_target": [POSITIVE_INT],
        "target_class": [None, CLASS_INDEX],
        "base_class": [None, CLASS_INDEX],
        "base_selection": [Options(BASE_SELECTIONS)],
        "watermark": [Interval(Real, 0, 1, closed="left", what="an opacity in [0, 1)")],
        "watermark_mode": [Options(WATERMARK_MODES)],
        "normalize_features": [Boolean()],
        **SETTINGS_CONSTRAINTS,
    }

    def __init__(
        self,
        *,
        num_targets: int = 1,
        bases_per_target: int = 1,
        target_class: int | None = None,
        base_class: int | None = None,
        base_selection: str = "random",
        watermark: float = 0.0,
        watermark_mode: str = "blend",
        normalize_features: bool = False,
        beta0: float = CollisionSettings.beta0,
        beta_scaling: str = CollisionSettings.beta_scaling,
        lr: float = CollisionSettings.lr,
        pixel_scale: float = CollisionSettings.pixel_scale,
        max_iter: int = CollisionSettings.max_iter,
        decay: float = CollisionSettings.decay,
        step_rule: str = CollisionSettings.step_rule,
        objective: str = CollisionSettings.objective,
        num_old_obj: int = CollisionSettings.num_old_obj,
        check_every: int = CollisionSettings.check_every,
        stop_tol: float = CollisionSettings.stop_tol,
        obj_threshold: float | None = CollisionSettings.obj_threshold,
        layer: str = CollisionSettings.layer,
        batch_size: int = CollisionSettings.batch_size,
    ) -> None:
        checked = validate_params(
            self.name,
            self._parameter_constraints,  # the settings go to CollisionSettings below
            {
                "num_targets": num_targets,
                "bases_per_target": bases_per_target,
                "target_class": target_class,
                "base_class": base_class,
                "base_selection": base_selection,
                "watermark": watermark,
                "watermark_mode": watermark_mode,
                "normalize_features": normalize_features,
            },
        )
        if target_class is not None and target_class == base_class:
            raise ConfigError(f"base_class must differ from target_class, both are {base_class}")
        self._settings = CollisionSettings(
            beta0=beta0,
            beta_scaling=beta_scaling,
            lr=lr,
            pixel_scale=pixel_scale,
            max_iter=max_iter,
            decay=decay,
            step_rule=step_rule,
            objective=objective,
            num_old_obj=num_old_obj,
            check_every=check_every,
            stop_tol=stop_tol,
            obj_threshold=obj_threshold,
            layer=layer,
            batch_size=batch_size,
        )
        for key, value in checked.items():
            setattr(self, key, value)
        for key, value in self._settings.to_dict().items():
            setattr(self, key, value)

    @property
    def settings(self) -> CollisionSettings:
        """The validated optimisation settings."""
        return self._settings

    def poison(
        self,
        train: ImageDataset,
        *,
        generator: torch.Generator,
        model: Any | None = None,
        test: ImageDataset | None = None,
        target_index: Tensor | None = None,
        base_index: Tensor | None = None,
    ) -> PoisonedDataset:
        """Craft the poisons against ``model`` and append them to ``train``.

        Parameters
        ----------
        train : ImageDataset
            The clean training set; bases come from it and the poisons are appended to it.
        generator : torch.Generator
            Drives the pair choice (the optimisation itself is deterministic).
        model : nn.Module
            The pre-trained victim network (required); it is left unchanged.
        test : ImageDataset or None
            Where targets come from (the paper: test images); None takes them from ``train``
            (Yaseen et al. 2020, which poisons the test split it also draws targets from).
        target_index, base_index : Tensor (T,) and Tensor (T, k), or None
            Explicit pairs (rows of the target pool and of ``train``) instead of random ones.

        Returns
        -------
        PoisonedDataset
            ``train`` rows unchanged, then the T·k poisons labelled with their base class;
            ``targets`` (true labels) and ``target_labels`` (their base class); JSON-ready
            ``extras`` with per-poison lists ``poison_target`` (index into ``targets``),
            ``base_index`` (row of ``train``), ``perturbation_l2`` ([0, 1] scale) and
            ``perturbation_l2_255``, ``distance_before`` / ``distance_after`` /
            ``distance_ratio``, ``iterations``, ``converged``, ``final_lr``, ``objective``, plus
            ``target_index`` (rows of the target pool) and a ``summary`` of means.
        """
        if not isinstance(model, nn.Module) or next(model.parameters(), None) is None:
            raise ConfigError(
                "feature-collision needs the victim model: poison(train, model=..., "
                "generator=...) with a trained network (a torch nn.Module with parameters), got "
                f"{short_repr(model)}"
            )
        pool = test if test is not None else train
        if pool.shape != train.shape:
            raise ConfigError(
                f"target images {pool.shape} differ from training images {train.shape}"
            )
        layer = self._settings.layer
        if (target_index is None) != (base_index is None):
            raise ConfigError("give both target_index and base_index, or neither")
        if target_index is not None and base_index is not None:
            targets_idx, bases_idx = self._check_pairs(pool, train, target_index, base_index)
        else:
            closest = self.base_selection == "closest"
            targets_idx, bases_idx = choose_pairs(
                pool.labels,
                train.labels,
                num_targets=self.num_targets,
                bases_per_target=self.bases_per_target,
                generator=generator,
                target_class=self.target_class,
                base_class=self.base_class,
                target_features=_pool_features(model, pool.images, layer) if closest else None,
                base_features=_pool_features(model, train.images, layer) if closest else None,
            )
        t, k = bases_idx.shape
        flat_bases = bases_idx.reshape(-1)
        poison_target = torch.arange(t).repeat_interleave(k)
        weights = None
        if self.normalize_features:
            weights = minmax_feature_weights(_pool_features(model, train.images, layer))
        result = craft_poisons(
            model,
            pool.images[targets_idx],
            train.images[flat_bases],
            poison_target,
            self._settings,
            opacity=self.watermark,
            watermark_mode=self.watermark_mode,
            feature_weights=weights,
        )
        base_labels = train.labels[flat_bases]
        base_ids = train.ids[flat_bases.numpy()]
        poisons = ImageDataset(
            result.poisons.float().clamp(0.0, 1.0),
            base_labels.clone(),
            train.num_classes,
            train.class_names,
            train.name,
            np.array([f"{bid}+{self.name}" for bid in base_ids], dtype=str).reshape(len(base_ids)),
        )
        n = len(train)
        params = {**self.params(), "beta": result.beta, "input_dim": result.input_dim}
        params["feature_dim"] = result.feature_dim
        ratio = result.distance_after / result.distance_before.clamp_min(1e-12)
        extras = {
            "target_pool": "test" if test is not None else "train",
            "target_index": targets_idx.tolist(),
            "poison_target": poison_target.tolist(),
            "base_index": flat_bases.tolist(),
            "perturbation_l2": result.perturbation.tolist(),
            "perturbation_l2_255": (result.perturbation * 255.0).tolist(),
            "distance_before": result.distance_before.tolist(),
            "distance_after": result.distance_after.tolist(),
            "distance_ratio": ratio.tolist(),
            "iterations": result.iterations.tolist(),
            "converged": result.converged.tolist(),
            "final_lr": result.final_lr.tolist(),
            "objective": result.objective.tolist(),
            "summary": {
                "perturbation_l2_mean": float(result.perturbation.mean()),
                "perturbation_l2_mean_255": float(result.perturbation.mean() * 255.0),
                "distance_ratio_median": float(ratio.median()),
                "distance_ratio_max": float(ratio.max()),
                "iterations_mean": float(result.iterations.double().mean()),
                "converged_fraction": float(result.converged.double().mean()),
            },
        }
        return PoisonedDataset(
            dataset=concatenate([train, poisons], name=f"{train.name}+feature-collision"),
            is_poison=torch.cat(
                [torch.zeros(n, dtype=torch.bool), torch.ones(t * k, dtype=torch.bool)]
            ),
            original_labels=torch.cat([train.labels, base_labels]),
            source_index=torch.cat([torch.arange(n), flat_bases]),
            source_ids=np.concatenate([train.ids, base_ids]),
            attack=self.name,
            params=params,
            targets=pool.subset(targets_idx),
            target_labels=base_labels.view(t, k)[:, 0].clone(),
            extras=extras,
        )

    @staticmethod
    def _check_pairs(
        pool: ImageDataset, train: ImageDataset, target_index: Tensor, base_index: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Validate explicit pairs: ranges, one base class per target that differs from it."""
        targets = torch.as_tensor(target_index, dtype=torch.long).reshape(-1)
        bases = torch.as_tensor(base_index, dtype=torch.long)
        if bases.ndim == 1:
            bases = bases[:, None]
        if bases.ndim != 2 or len(bases) != len(targets) or len(targets) == 0:
            raise ConfigError("base_index must be (T, k) for T = len(target_index) >= 1")
        for name, idx, size in (
            ("target_index", targets, len(pool)),
            ("base_index", bases, len(train)),
        ):
            if int(idx.min()) < 0 or int(idx.max()) >= size:
                raise ConfigError(f"{name} must hold rows in [0, {size - 1}]")
        if len(torch.unique(bases)) != bases.numel():
            raise ConfigError("base_index must not repeat a base image")
        labels = train.labels[bases]
        if not (labels == labels[:, :1]).all():
            raise ConfigError("all bases of one target must share one class")
        if (labels[:, 0] == pool.labels[targets]).any():
            raise ConfigError("a base class equals its target's class (not a clean-label attack)")
        return targets, bases
