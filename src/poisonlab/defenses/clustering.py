"""Per-class 2-means clustering shared by Activation Clustering and the raw-pixel baseline.

Both defenses (Chen et al. 2018, arXiv:1811.03728; seed 004 §5.3 and Table 3) take the samples of
one claimed class, reduce them to a few dimensions (PCA or FastICA), split them with k-means
(k = 2, k-means++), and call one cluster poisoned by a rule on the clusters: the smaller one, a
smaller one holding less than ``size_threshold`` of the class, or additionally a silhouette above
``silhouette_threshold`` (ART's ``relative-size`` and ``silhouette-scores`` analyses).

The papers give only that binary verdict. To rank samples (AUROC, contamination thresholds) we add
a continuous **separation score** in the reduced space,

    s(z) = (‖z − c_large‖ − ‖z − c_small‖) / σ,

where c_large, c_small are the two centroids and σ is the pooled within-cluster standard deviation
along the line joining them. Why this form:

- s > 0 exactly when z is nearer the small centroid, i.e. in the small cluster, so ranking by s
  agrees with the smaller-cluster rule;
- by the triangle inequality |s| <= D/σ with D = ‖c_small − c_large‖: a sample can score high
  only in a class whose two clusters are far apart relative to their spread. A clean class that
  k-means merely cuts in two (D/σ around 2–3 for a Gaussian) cannot outrank the members of a
  cleanly separated poison cluster (D/σ ≫ 3), which makes scores comparable across classes;
- it is invariant to the scale of the representation.

Limits: k-means assumes the poisons form one compact cluster; with no poison it still splits every
class in two, so the smaller-cluster rule then flags clean samples (use ``relative-size`` or
``silhouette``, or a contamination threshold on the score). Classes with fewer than 3 samples, or
whose points are all identical, cannot be split: their samples score 0 and are never flagged.
Silhouettes are computed on at most 2,000 samples per class (sklearn's ``sample_size``, a fixed
subsample per class).

**Which k-means restart.** k-means is run ``n_init`` times from k-means++ seeds. Plain k-means
keeps the lowest inertia (``select="inertia"``). By default we keep the highest silhouette
instead (``select="silhouette"``): on a backdoored Fashion-MNIST model the lowest-inertia split of
a diverse clean class ("shirt") cut along its own variation and left every poison in the large
cluster, while another restart isolated the poisons exactly and had the higher silhouette
(bench/results/detectors.md compares both).
"""

from __future__ import annotations

import logging
import warnings
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from poisonlab.defenses.base import Detector, per_class_scores
from poisonlab.defenses.evidence import Evidence, Part
from poisonlab.defenses.thresholds import ScoreSet, Threshold
from poisonlab.seeding import derive_seed
from poisonlab.validation import POSITIVE_INT, SEED, ConstraintList, Interval, Options

log = logging.getLogger(__name__)

REDUCTIONS = ("pca", "fastica", "none")
RULES = ("smaller", "relative-size", "silhouette")
SELECTIONS = ("silhouette", "inertia")
MIN_CLASS_SIZE = 3
SILHOUETTE_SAMPLES = 2000


def sklearn_seed(seed: int, *keys: object) -> int:
    """A 32-bit ``random_state`` derived from ``seed`` and labels (independent per class)."""
    return derive_seed(seed, *keys) % (2**32)


def reduce_dimensions(
    x: np.ndarray, method: str, n_components: int, random_state: int
) -> tuple[Any | None, np.ndarray]:
    """(fitted reducer or None, x reduced to at most ``n_components`` dims), float64.

    FastICA uses the seed code's settings (``max_iter=1000, tol=0.005``), after dropping constant
    features. Nothing is reduced when
    ``method == "none"`` or x has no more than ``n_components`` features (ART does the same);
    components are capped at ``n_samples - 1`` so tiny classes still work.
    """
    x = np.asarray(x, dtype=np.float64)
    k = min(n_components, len(x) - 1)
    if method == "none" or x.shape[1] <= k:
        return None, x
    from sklearn.decomposition import PCA, FastICA
    from sklearn.feature_selection import VarianceThreshold
    from sklearn.pipeline import make_pipeline

    if method == "pca":
        reducer: Any = PCA(n_components=k, random_state=random_state)
    else:
        # Constant features (e.g. an always-black corner pixel) first: scikit-learn's FastICA fixes
        # each component's sign by the first feature's loading, and a constant first feature makes
        # every sign 0 and the whole result NaN.
        reducer = make_pipeline(
            VarianceThreshold(0.0),
            FastICA(n_components=k, max_iter=1000, tol=0.005, random_state=random_state),
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        z = reducer.fit_transform(x)
    for warning in caught:
        log.warning("%s: %s", method, warning.message)
    return reducer, np.asarray(z, dtype=np.float64)


def separation_scores(z: np.ndarray, centroids: np.ndarray, scale: float) -> np.ndarray:
    """(‖z − c_large‖ − ‖z − c_small‖) / scale for rows of z; centroids = [large, small]."""
    d_large = np.linalg.norm(z - centroids[0], axis=1)
    d_small = np.linalg.norm(z - centroids[1], axis=1)
    return (d_large - d_small) / scale


def axis_spread(z: np.ndarray, small: np.ndarray, centroids: np.ndarray) -> float:
    """Pooled within-cluster standard deviation of z projected on the centroid axis (floored)."""
    axis = centroids[1] - centroids[0]
    distance = float(np.linalg.norm(axis))
    projected = z @ (axis / distance)
    deviations = np.concatenate(
        [
            projected[members] - projected[members].mean()
            for members in (small, ~small)
            if members.any()
        ]
    )
    return max(float(np.sqrt(np.mean(deviations**2))), 1e-6 * distance)


@dataclass(frozen=True)
class TwoMeansSplit:
    """One class split in two: which samples fell in the small cluster, and how to score new ones.

    centroids : float64 (2, d), rows [large cluster, small cluster] in the reduced space
    small : bool (n,), membership of the small cluster (nearest centroid)
    scale : σ of the separation score
    silhouette : mean silhouette of the split (NaN when undefined)
    """

    reducer: Any | None
    centroids: np.ndarray
    small: np.ndarray
    scale: float
    silhouette: float
    scores: np.ndarray

    @property
    def small_fraction(self) -> float:
        """Share of the class in the small cluster."""
        return float(self.small.mean())

    @property
    def separation(self) -> float:
        """Centroid distance in units of σ: the largest score any sample can reach."""
        return float(np.linalg.norm(self.centroids[1] - self.centroids[0]) / self.scale)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Separation scores of new samples (raw representations, reduced with the fitted reducer)."""
        z = np.asarray(x, dtype=np.float64)
        if self.reducer is not None:
            z = self.reducer.transform(z)
        return separation_scores(z, self.centroids, self.scale)


def silhouette(z: np.ndarray, small: np.ndarray, random_state: int) -> float:
    """Mean silhouette of a two-cluster split, on at most ``SILHOUETTE_SAMPLES`` samples."""
    from sklearn.metrics import silhouette_score

    return float(
        silhouette_score(
            z,
            small.astype(int),
            sample_size=min(len(z), SILHOUETTE_SAMPLES),
            random_state=random_state,
        )
    )


def _candidate(
    z: np.ndarray, centers: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """(centroids [large, small], small-cluster membership by nearest centroid), or None."""
    sizes = np.bincount(labels, minlength=2)
    order = [0, 1] if sizes[0] > sizes[1] else [1, 0]  # ties: k-means label 0 is "small"
    centroids = np.asarray(centers, dtype=np.float64)[order]
    if not np.linalg.norm(centroids[1] - centroids[0]) > 0:
        return None
    d = np.linalg.norm(z[:, None, :] - centroids[None], axis=2)
    small = d[:, 1] < d[:, 0]
    if small.all() or not small.any():
        return None
    return centroids, small


def split_two_means(
    x: np.ndarray,
    *,
    reduce: str,
    n_components: int,
    n_init: int,
    random_state: int,
    select: str = "silhouette",
) -> TwoMeansSplit | None:
    """Reduce, run k-means (k = 2, k-means++) ``n_init`` times, and score the kept split.

    ``select="inertia"`` keeps the restart with the lowest within-cluster sum of squares (plain
    k-means, ``KMeans(n_init=n_init)``). ``select="silhouette"`` keeps the restart with the highest
    silhouette: a compact poison cluster is a real split (high silhouette) even when a diverse
    clean class has a lower-inertia cut along its own variation, which k-means then prefers.
    Returns None when the class cannot be split (too few samples, or all points identical).
    """
    if len(x) < MIN_CLASS_SIZE:
        return None
    reducer, z = reduce_dimensions(x, reduce, n_components, random_state)
    if not np.ptp(z, axis=0).any():
        return None
    from sklearn.cluster import KMeans

    best: tuple[float, np.ndarray, np.ndarray] | None = None
    if select == "inertia":
        kmeans = KMeans(n_clusters=2, init="k-means++", n_init=n_init, random_state=random_state)
        found = _candidate(z, kmeans.fit(z).cluster_centers_, kmeans.labels_)
        if found is not None:
            best = (silhouette(z, found[1], random_state), *found)
    else:
        for restart in range(n_init):
            state = sklearn_seed(random_state, "restart", restart)
            kmeans = KMeans(n_clusters=2, init="k-means++", n_init=1, random_state=state)
            found = _candidate(z, kmeans.fit(z).cluster_centers_, kmeans.labels_)
            if found is None:
                continue
            value = silhouette(z, found[1], random_state)
            if best is None or value > best[0]:
                best = (value, *found)
    if best is None:
        return None
    value, centroids, small = best
    scale = axis_spread(z, small, centroids)
    scores = separation_scores(z, centroids, scale)
    return TwoMeansSplit(reducer, centroids, small, scale, value, scores)


def cluster_is_suspect(
    split: TwoMeansSplit, rule: str, size_threshold: float, silhouette_threshold: float
) -> bool:
    """Whether ``rule`` calls the small cluster poisoned."""
    if rule == "smaller":
        return True
    small_enough = split.small_fraction < size_threshold
    if rule == "relative-size":
        return small_enough
    return small_enough and split.silhouette > silhouette_threshold


class TwoMeansDetector(Detector):
    """Per-class reduce → 2-means → cluster rule, with the separation score (module docstring).

    Inductive: new samples are scored with their class's fitted reducer, centroids and σ
    (:meth:`~poisonlab.defenses.base.Detector.score_samples`).

    Subclasses say which representation to cluster (:meth:`_representation`) and may review the
    suspect clusters (:meth:`_review`, e.g. exclusionary reclassification).

    Parameters
    ----------
    reduce : {"pca", "fastica", "none"}
        Dimensionality reduction before k-means.
    n_components : int
        Dimensions kept (10 in the paper and seed 004).
    rule : {"smaller", "relative-size", "silhouette"}
        Which cluster is poisoned: always the smaller one (seed 004, ART's default); the smaller one
        if it holds < ``size_threshold`` of the class; or that and silhouette > ``silhouette_threshold``.
    size_threshold : float in (0, 0.5]
        ART's default 0.35.
    silhouette_threshold : float in [-1, 1)
        ART's default 0.10.
    n_init : int
        k-means restarts (k-means++ seeds).
    select : {"silhouette", "inertia"}
        Which restart is kept: the highest silhouette (default) or the lowest inertia (plain
        k-means); see the module docstring.
    seed : int
        Seeds the reduction and k-means of every class (each class gets its own derived seed).
    threshold, classes
        See :class:`~poisonlab.defenses.base.Detector`.
    """

    per_class = True
    gives_verdicts = True
    inductive = True
    _parameter_constraints: ClassVar[dict[str, ConstraintList]] = {
        "reduce": [Options(REDUCTIONS)],
        "n_components": [POSITIVE_INT],
        "rule": [Options(RULES)],
        "size_threshold": [Interval(Real, 0, 0.5, closed="right")],
        "silhouette_threshold": [Interval(Real, -1, 1, closed="left")],
        "n_init": [POSITIVE_INT],
        "select": [Options(SELECTIONS)],
        "seed": [SEED],
    }

    def __init__(
        self,
        *,
        reduce: str = "pca",
        n_components: int = 10,
        rule: str = "smaller",
        size_threshold: float = 0.35,
        silhouette_threshold: float = 0.10,
        n_init: int = 10,
        select: str = "silhouette",
        seed: int = 0,
        threshold: Threshold | str | None = None,
        classes: Sequence[int] | None = None,
    ) -> None:
        super().__init__(threshold=threshold, classes=classes)
        self._set_params(
            reduce=reduce,
            n_components=n_components,
            rule=rule,
            size_threshold=size_threshold,
            silhouette_threshold=silhouette_threshold,
            n_init=n_init,
            select=select,
            seed=seed,
        )

    @abstractmethod
    def _representation(self, evidence: Evidence, part: Part) -> Tensor:
        """(N, D) vectors to cluster for the suspect data or the clean held-out set."""

    def _review(
        self, evidence: Evidence, suspects: dict[int, Tensor], report: dict[str, dict[str, Any]]
    ) -> dict[int, Tensor]:
        """Hook to clear suspect clusters (class → sample indices); default keeps them all."""
        return suspects

    def _score(self, evidence: Evidence) -> ScoreSet:
        """Split every analysed class, score its samples, and flag the suspect clusters."""
        labels = evidence.labels()
        vectors = self._representation(evidence, "data").double().cpu().numpy()
        scores = per_class_scores(len(labels))
        splits: dict[int, TwoMeansSplit] = {}
        suspects: dict[int, Tensor] = {}
        report: dict[str, dict[str, Any]] = {}
        for c in self.analysed_classes(evidence):
            idx = (labels == c).nonzero().flatten()
            split = split_two_means(
                vectors[idx.numpy()],
                reduce=self.reduce,
                n_components=self.n_components,
                n_init=self.n_init,
                select=self.select,
                random_state=sklearn_seed(self.seed, self.name, c),
            )
            if split is None:
                scores[idx] = 0.0
                report[str(c)] = {"n": len(idx), "split": False}
                continue
            splits[c] = split
            scores[idx] = torch.from_numpy(split.scores)
            suspect = cluster_is_suspect(
                split, self.rule, self.size_threshold, self.silhouette_threshold
            )
            report[str(c)] = {
                "n": len(idx),
                "split": True,
                "small_fraction": round(split.small_fraction, 4),
                "silhouette": round(split.silhouette, 4),
                "separation": round(split.separation, 4),
                "suspect": suspect,
            }
            if suspect:
                suspects[c] = idx[torch.from_numpy(split.small)]
        suspects = self._review(evidence, suspects, report)
        flags = torch.zeros(len(labels), dtype=torch.bool)
        for members in suspects.values():
            flags[members] = True
        self.splits_ = splits
        self.classes_ = [int(c) for c in report]
        return ScoreSet(
            scores,
            flags,
            self._holdout_reference(evidence, classes=list(splits)),
            extras={"classes": report},
        )

    def _score_new(self, evidence: Evidence, part: Part) -> Tensor:
        """Samples of ``part`` scored with their class's fitted reducer, centroids and σ.

        Samples of an analysed class that could not be split score 0, as in :meth:`_score`;
        samples of classes not analysed score NaN.
        """
        labels = evidence.labels(part)
        vectors = self._representation(evidence, part).double().cpu().numpy()
        scores = per_class_scores(len(labels))
        for c in self.classes_:
            members = labels == c
            if not members.any():
                continue
            split = self.splits_.get(c)
            scores[members] = (
                torch.from_numpy(split.score(vectors[members.numpy()])) if split else 0.0
            )
        return scores
