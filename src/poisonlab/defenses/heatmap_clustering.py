"""Heatmap Clustering (Schulth, Berghoff, Neu 2022, "Detecting Backdoor Poisoning Attacks on Deep
Neural Networks by Heatmap Clustering"; seed 004 §5.3–5.5, METHODS §7.4–7.5).

Activation Clustering looks at *what* a backdoored model computes for a poisoned sample; Heatmap
Clustering looks at *where* it looks: the model classifies a triggered image as the target because
of the trigger, so its LRP heatmap concentrates on a small patch, while genuine members of the
class draw relevance from the object. Per claimed class:

1. an LRP heatmap per image (:func:`poisonlab.explain.lrp.lrp_heatmaps`; composite
   ``epsilon-plus-flat`` by default, relevance of the predicted class as in the seed);
2. each heatmap becomes a metric-measure space (C, p): the pixels carrying the top ``mass``
   (99%) of the relevance, their pairwise distances normalised by the largest, and their masses
   (:func:`poisonlab.explain.point_cloud.heatmaps_to_clouds`, after average pooling by ``pool``
   and capped at ``max_points``, the size bound that makes GW affordable); with
   ``relevance="positive"`` only the positive relevance is cut (see the parameter);
3. k-means with k = 2 under the entropic Gromov–Wasserstein distance (square loss, ε), k-means++
   seeding and GW barycenters of ``n_support`` points as means
   (:func:`poisonlab.explain.gw_kmeans.gw_kmeans`, at most ``max_iter`` updates, seed: 5);
4. the paper's rule: the **smaller cluster is poisoned**.

**Continuous score.** The paper gives only the binary verdict. To rank samples (AUROC,
contamination and target-FPR thresholds) we score each sample by its margin
m = GW(x, b_large) − GW(x, b_small) to the two final barycenters, divided by σ, the pooled
within-cluster standard deviation of m: s = m / σ. Why:

- s > 0 exactly when x is nearer the small barycenter, i.e. when k-means put it in the small
  cluster, so ranking by s agrees with the paper's rule;
- GW values behave like squared distances; for squared Euclidean distances the margin is the
  projection on the axis joining the two means, so s is that projection in units of the
  within-cluster spread, the same normalisation as Activation Clustering's separation score
  (:mod:`poisonlab.defenses.clustering`). It is free of the units of GW (which depend on ε, the
  pooling and the cloud size), so scores of different classes are comparable: a clean class that
  k-means merely cuts in two keeps |s| of order 1–2, the members of a well-separated poison
  cluster score far higher.

``reference`` (for target-FPR thresholds) scores clean held-out images of each split class the
same way: their clouds' GW distances to that class's two barycenters, over the same σ.

Limits and assumptions: the poisons of a class must change *where* the model looks (a patch
trigger does; a blended or global trigger may not); like every k-means rule, a clean class still
loses its smaller half under the paper's rule (use a contamination or target-FPR threshold on the
score instead); k-means is local and its result depends on the seeding (``seed``). Cost: one LRP
pass per image, then about 2·(n_class) GW solves per k-means++ seed plus 2 barycenters and
2·n_class solves per update, on clouds of up to ``max_points`` points
(bench/results/heatmap_clustering.md). LGM heads are refused (see :mod:`poisonlab.explain.lrp`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from poisonlab import progress
from poisonlab.defenses.base import Detector, per_class_scores, register_detector
from poisonlab.defenses.evidence import Evidence, Part
from poisonlab.defenses.thresholds import ScoreSet, Threshold
from poisonlab.errors import ConfigError
from poisonlab.explain.lrp import COMPOSITES, EXPLAIN
from poisonlab.explain.point_cloud import DEFAULT_MAX_POINTS
from poisonlab.seeding import derive_seed, make_generator

MIN_CLASS_SIZE = 3
#: Relevance a point cloud is cut from (see ``HeatmapClustering``).
RELEVANCE = ("raw", "positive")
#: ``pool=None`` pools by the largest factor that keeps at least this many pixels per side.
MIN_POOLED_SIDE = 14


def auto_pool(height: int, width: int) -> int:
    """The pooling factor used when ``pool`` is None.

    The largest p dividing both sides with min(H, W) / p >= 14: 32×32 (GTSRB, CIFAR) → 2, the
    setting measured in :mod:`poisonlab.explain.point_cloud` (16×16 grid, ~60 points that still
    carry 99% of the relevance); 28×28 (Fashion-MNIST) → 2; 8×8 or 16×16 → 1 (no pooling).
    """
    side = min(height, width)
    fitting = [
        p
        for p in range(2, side + 1)
        if height % p == 0 and width % p == 0 and side // p >= MIN_POOLED_SIDE
    ]
    return max(fitting, default=1)


def margin_scale(margin: Tensor, small: Tensor) -> float:
    """σ: the pooled within-cluster standard deviation of the margin (floored above 0)."""
    deviations = torch.cat(
        [margin[members] - margin[members].mean() for members in (small, ~small) if members.any()]
    )
    sigma = float(deviations.pow(2).mean().sqrt())
    floor = max(1e-6 * float(margin.abs().max()), torch.finfo(torch.float64).tiny)
    return max(sigma, floor)


def _integer(name: str, value: object, low: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        extra = " or None" if optional else ""
        raise ConfigError(f"{name} must be an integer >= {low}{extra}, got {value!r}")


def _positive(name: str, value: object, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")


@register_detector("heatmap-clustering")
class HeatmapClustering(Detector):
    """Heatmap Clustering: per-class GW k-means (k = 2) on LRP heatmaps; smaller cluster flagged.

    Parameters
    ----------
    composite : str
        LRP composite (:data:`poisonlab.explain.lrp.COMPOSITES`); ``"epsilon"`` is the seed's
        uniform ε-rule.
    explain : {"predicted", "claimed"}
        Explain the predicted (max-logit) class, as the seed does, or the claimed label.
    lrp_epsilon : float
        ε of the LRP-ε rule, in logit units.
    mass : float in (0, 1]
        Fraction of the relevance each point cloud keeps (seed: 0.99).
    pool : int or None
        Average pooling of the heatmap before the cut; None picks it from the image size
        (:func:`auto_pool`); 1 is the seed's full resolution.
    relevance : {"raw", "positive"}
        Which relevance the clouds are cut from: the signed heatmap, min-max rescaled as in the
        seed (every pixel, background included, gets mass ≥ 0 after the shift, so on images with
        an empty background the 99% cut keeps almost every pixel), or its positive part only
        (evidence *for* the explained class; zero-relevance pixels never enter a cloud). Measured
        on Fashion-MNIST BadNets (bench/results/heatmap_clustering.md).
    max_points : int or None
        Cap on points per cloud after the cut (the heaviest are kept); None for no cap.
    epsilon : float
        ε of the entropic GW distances (seed: 0.02 on max-normalised distances).
    bary_epsilon : float or None
        ε of the barycenter couplings; None = ``epsilon`` (see :mod:`poisonlab.explain.gw_kmeans`).
    n_support : int
        Points N of each barycenter (seed clustering script: 10).
    max_iter : int
        Maximum k-means updates (seed: 5); 0 keeps the k-means++ seeding's assignment.
    seed_gw_max_iter : int
        Iteration cap of the cloud-to-cloud solves of the k-means++ seeding.
    top_heatmaps : int
        How many of the most suspicious heatmaps ``extras["top_heatmaps"]`` keeps for reports.
    seed : int
        Seeds k-means++ and the barycenters' starts (each class gets its own derived stream).
    threshold, classes
        See :class:`~poisonlab.defenses.base.Detector`.
    """

    name = "heatmap-clustering"
    needs_model = True
    per_class = True

    def __init__(
        self,
        *,
        composite: str = "epsilon-plus-flat",
        explain: str = "predicted",
        lrp_epsilon: float = 1e-6,
        mass: float = 0.99,
        pool: int | None = None,
        relevance: str = "raw",
        max_points: int | None = DEFAULT_MAX_POINTS,
        epsilon: float = 0.02,
        bary_epsilon: float | None = None,
        n_support: int = 10,
        max_iter: int = 5,
        seed_gw_max_iter: int = 100,
        top_heatmaps: int = 8,
        seed: int = 0,
        threshold: Threshold | str | None = None,
        classes: Sequence[int] | None = None,
    ) -> None:
        super().__init__(threshold=threshold, classes=classes)
        if composite not in COMPOSITES:
            raise ConfigError(
                f"composite must be one of {', '.join(COMPOSITES)}, got {composite!r}"
            )
        if explain not in EXPLAIN:
            raise ConfigError(f"explain must be one of {', '.join(EXPLAIN)}, got {explain!r}")
        if isinstance(mass, bool) or not isinstance(mass, int | float) or not 0.0 < mass <= 1.0:
            raise ConfigError(f"mass must lie in (0, 1], got {mass!r}")
        for name, value in (("lrp_epsilon", lrp_epsilon), ("epsilon", epsilon)):
            _positive(name, value)
        _positive("bary_epsilon", bary_epsilon, optional=True)
        _integer("pool", pool, 1, optional=True)
        if relevance not in RELEVANCE:
            raise ConfigError(f"relevance must be one of {', '.join(RELEVANCE)}, got {relevance!r}")
        _integer("max_points", max_points, 1, optional=True)
        _integer("n_support", n_support, 2)
        _integer("max_iter", max_iter, 0)
        _integer("seed_gw_max_iter", seed_gw_max_iter, 1)
        _integer("top_heatmaps", top_heatmaps, 0)
        _integer("seed", seed, -(2**63))
        self.composite = composite
        self.explain = explain
        self.lrp_epsilon = float(lrp_epsilon)
        self.mass = float(mass)
        self.pool = pool
        self.relevance = relevance
        self.max_points = max_points
        self.epsilon = float(epsilon)
        self.bary_epsilon = None if bary_epsilon is None else float(bary_epsilon)
        self.n_support = n_support
        self.max_iter = max_iter
        self.seed_gw_max_iter = seed_gw_max_iter
        self.top_heatmaps = top_heatmaps
        self.seed = seed

    # -- representations, cached in the Evidence --------------------------------------------

    def _heatmap_key(self, part: Part, c: int) -> tuple[Any, ...]:
        return ("lrp-heatmaps", part, c, self.composite, self.explain, self.lrp_epsilon)

    def heatmaps(self, evidence: Evidence, part: Part, c: int) -> Tensor:
        """LRP heatmaps (n_c, H, W), float32 CPU, of the ``part`` images labelled ``c`` (cached)."""

        def compute() -> Tensor:
            from poisonlab.explain.lrp import lrp_heatmaps

            model = evidence.require_model()
            data = evidence.dataset(part)
            members = data.labels == c
            return lrp_heatmaps(
                model,
                data.images[members],
                labels=data.labels[members],
                explain=self.explain,
                composite=self.composite,
                epsilon=self.lrp_epsilon,
                batch_size=evidence.batch_size,
            )

        return evidence.cached(self._heatmap_key(part, c), compute)  # type: ignore[no-any-return]

    def _pool(self, evidence: Evidence) -> int:
        _, height, width = evidence.data.images.shape[1:]
        return self.pool if self.pool is not None else auto_pool(height, width)

    def clouds(self, evidence: Evidence, part: Part, c: int) -> Any:
        """Point clouds (:class:`~poisonlab.explain.point_cloud.PointClouds`) of those heatmaps,
        float64 on the evidence's device (cached)."""

        def compute() -> Any:
            from poisonlab.explain.point_cloud import heatmaps_to_clouds

            maps = self.heatmaps(evidence, part, c).to(evidence.device)
            if self.relevance == "positive":
                maps = maps.clamp(min=0.0)
            return heatmaps_to_clouds(
                maps, mass=self.mass, pool=self._pool(evidence), max_points=self.max_points
            )

        key = ("gw-clouds", self._heatmap_key(part, c), self.relevance, self.mass)
        return evidence.cached((*key, self._pool(evidence), self.max_points), compute)

    # -- scoring -----------------------------------------------------------------------------

    def _score(self, evidence: Evidence) -> ScoreSet:
        """Split every analysed class with GW k-means; score by the normalised margin."""
        from poisonlab.explain.gromov import entropic_gw
        from poisonlab.explain.gw_kmeans import gw_kmeans

        evidence.require_model()
        labels = evidence.labels()
        scores = per_class_scores(len(labels))
        flags = torch.zeros(len(labels), dtype=torch.bool)
        report: dict[str, dict[str, Any]] = {}
        fitted: dict[int, tuple[tuple[tuple[Tensor, Tensor], ...], int, float]] = {}
        classes = self.analysed_classes(evidence)
        with progress.bar("heatmap clustering", total=len(classes)) as bar:
            for c in classes:
                idx = (labels == c).nonzero().flatten()
                if len(idx) < MIN_CLASS_SIZE:
                    scores[idx] = 0.0
                    report[str(c)] = {"n": len(idx), "split": False}
                    bar.advance(1)
                    continue
                bar.advance(0, info=f"class {c}: {len(idx)} heatmaps")
                clouds = self.clouds(evidence, "data", c)
                result = gw_kmeans(
                    clouds,
                    k=2,
                    epsilon=self.epsilon,
                    bary_epsilon=self.epsilon if self.bary_epsilon is None else self.bary_epsilon,
                    n_support=self.n_support,
                    max_iter=self.max_iter,
                    seed_gw_max_iter=self.seed_gw_max_iter,
                    generator=make_generator(derive_seed(self.seed, self.name, c)),
                )
                small_id = result.minority
                distances = result.distances.double().cpu()
                small = result.in_minority.cpu()
                margin = distances[:, 1 - small_id] - distances[:, small_id]
                sigma = margin_scale(margin, small)
                scores[idx] = margin / sigma
                flags[idx[small]] = True
                centers = (result.centers[1 - small_id], result.centers[small_id])
                fitted[c] = (centers, small_id, sigma)
                (C_large, p_large), (C_small, p_small) = centers
                between = entropic_gw(
                    C_large[None], p_large[None], C_small[None], p_small[None], epsilon=self.epsilon
                )
                own = distances.gather(1, result.labels.cpu()[:, None])[:, 0]
                report[str(c)] = {
                    "n": len(idx),
                    "split": True,
                    "sizes": [int((~small).sum()), int(small.sum())],
                    "small_fraction": round(float(small.double().mean()), 4),
                    "n_iter": result.n_iter,
                    "converged": result.converged,
                    "seeds": idx[result.seeds.cpu()].tolist(),
                    "mean_points": round(float(clouds.sizes.double().mean()), 2),
                    "gw_to_own_center": {
                        "large": _mean(own[~small]),
                        "small": _mean(own[small]),
                    },
                    "gw_between_centers": float(between.value[0]),
                    "sigma": sigma,
                    "separation": round(
                        float(margin[small].mean() - margin[~small].mean()) / sigma, 4
                    ),
                    "suspect": True,
                }
                bar.advance(1)
        extras = {
            "classes": report,
            "pool": self._pool(evidence),
            "top_heatmaps": self._top_heatmaps(evidence, scores),
        }
        return ScoreSet(scores, flags, self._reference(evidence, fitted), extras=extras)

    def _reference(
        self,
        evidence: Evidence,
        fitted: dict[int, tuple[tuple[tuple[Tensor, Tensor], ...], int, float]],
    ) -> Tensor | None:
        """Scores of clean held-out images of the split classes: margins to the two barycenters."""
        if evidence.holdout is None:
            return None
        from poisonlab.explain.gromov import gw_to_one

        held = evidence.labels("holdout")
        parts = []
        for c, (centers, _, sigma) in fitted.items():
            if not bool((held == c).any()):
                continue
            clouds = self.clouds(evidence, "holdout", c)
            d_large, d_small = (
                gw_to_one(clouds, C, p, epsilon=self.epsilon, keep_plans=False).value.double().cpu()
                for C, p in centers
            )
            parts.append((d_large - d_small) / sigma)
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)

    def _top_heatmaps(self, evidence: Evidence, scores: Tensor) -> dict[str, Any]:
        """The ``top_heatmaps`` highest-scoring analysed samples: rows, scores, heatmaps."""
        analysed = (~torch.isnan(scores)).nonzero().flatten()
        order = torch.sort(scores[analysed], descending=True, stable=True).indices
        chosen = analysed[order[: self.top_heatmaps]]
        labels = evidence.labels()
        maps = []
        for i in chosen.tolist():
            c = int(labels[i])
            row = int((labels[:i] == c).sum())  # position of sample i among its class
            maps.append(self.heatmaps(evidence, "data", c)[row].tolist())
        return {"index": chosen.tolist(), "score": scores[chosen].tolist(), "heatmaps": maps}


def _mean(values: Tensor) -> float | None:
    """Mean of a float tensor, rounded for reports (None when empty)."""
    return round(float(values.mean()), 6) if values.numel() else None
