"""Per-class 2-means clustering shared by Activation Clustering and the raw-pixel baseline.

Both defenses (Chen et al. 2018, arXiv:1811.03728; Schulth et al. 2022 §5.3 and Table 3) take the
samples of one claimed class, reduce them to a few dimensions (PCA or FastICA), split them with
k-means (k = 2, k-means++), and call one cluster poisoned by a rule on the clusters: the smaller
one, a smaller one holding less than ``size_threshold`` of the class, or additionally a silhouette
above ``silhouette_threshold`` (ART's ``relative-size`` and ``silhouette-scores`` analyses).

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

**What the per-class verdict reads.** The separation score sums the clean spread of every
reduced dimension, so a poison group that stands apart along one direction blurs into the clean
tail. The verdict (:mod:`poisonlab.defenses.verdicts`) therefore reads the kept split's Fisher
projection (Fisher 1936: z·S_w⁻¹(c_small − c_large), S_w the pooled within-cluster covariance,
centred between the centroids, in within-cluster standard deviations; ``verdict_scores``), while
the separation score stays the ranking score, bounded and comparable across classes.

**Which k-means restart.** k-means is run ``n_init`` times from k-means++ seeds. Plain k-means
keeps the lowest inertia (``select="inertia"``). By default we keep the highest silhouette
instead (``select="silhouette"``): on a backdoored Fashion-MNIST model the lowest-inertia split of
a diverse clean class ("shirt") cut along its own variation and left every poison in the large
cluster, while another restart isolated the poisons exactly and had the higher silhouette
(bench/results/detectors.md compares both).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from numbers import Real
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from poisonlab.defenses.base import Detector, per_class_scores
from poisonlab.defenses.evidence import Evidence, Part
from poisonlab.defenses.thresholds import ScoreSet, Threshold
from poisonlab.defenses.verdicts import ClassVerdict
from poisonlab.seeding import derive_seed
from poisonlab.validation import (
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    SEED,
    ConstraintList,
    Interval,
    Options,
)

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

    FastICA uses the settings of Schulth et al. 2022's code (``max_iter=1000, tol=0.005``), after
    dropping constant features. Nothing is reduced when ``method == "none"`` or x has no more than
    ``n_components`` features (ART does the same); components are capped at ``n_samples - 1`` so
    tiny classes still work.
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
    fisher: np.ndarray | None = None

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


def fisher_direction(z: np.ndarray, small: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """w = S_w⁻¹ (c_small − c_large): Fisher's discriminant of the split (S_w the pooled
    within-cluster covariance, with a ridge of 10⁻⁶ of its mean variance so it is invertible)."""
    deviations = np.vstack([z[small] - centroids[1], z[~small] - centroids[0]])
    within = deviations.T @ deviations / len(z)
    ridge = 1e-6 * max(float(np.trace(within)) / len(within), 1e-12)
    return np.linalg.solve(within + ridge * np.eye(len(within)), centroids[1] - centroids[0])


def fisher_spread(z: np.ndarray, small: np.ndarray, centroids: np.ndarray, w: np.ndarray) -> float:
    """Pooled within-cluster standard deviation of z·w (floored like :func:`axis_spread`)."""
    projected = z @ w
    deviations = np.concatenate(
        [projected[small] - centroids[1] @ w, projected[~small] - centroids[0] @ w]
    )
    gap = abs(float((centroids[1] - centroids[0]) @ w))
    return max(float(np.sqrt(np.mean(deviations**2))), 1e-6 * gap, 1e-300)


def fisher_scores(z: np.ndarray, centroids: np.ndarray, w: np.ndarray, scale: float) -> np.ndarray:
    """(z − (c_small + c_large)/2)·w / scale: positive on the small cluster's side of Fisher's
    boundary, in within-cluster standard deviations."""
    return (z - (centroids[0] + centroids[1]) / 2.0) @ w / scale


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


class SplitSilhouettes:
    """:func:`silhouette` of many two-cluster splits of the same points, from one distance matrix.

    scikit-learn's ``silhouette_score`` with ``sample_size`` and a fixed ``random_state`` draws the
    same subsample for every split of a class and recomputes its pairwise distances each time
    (and loops over its rows in Python): choosing among ~70 restarts of one 6,000-sample class
    cost ~2 s. Here the subsample (drawn as scikit-learn draws it) and its Euclidean distances are
    computed once; each split then costs two matrix-vector products. The values equal
    ``silhouette_score``'s up to floating-point summation order
    (tests/defenses/test_activation_clustering.py). A split whose subsample holds one cluster only, which scikit-learn refuses, gets -1 (the worst
    silhouette): it can then not be the kept split.
    """

    def __init__(self, z: np.ndarray, random_state: int) -> None:
        from sklearn.metrics import pairwise_distances

        order = np.random.RandomState(random_state).permutation(len(z))
        self.index = order[:SILHOUETTE_SAMPLES]
        self.distances = pairwise_distances(np.asarray(z, dtype=np.float64)[self.index])

    def __call__(self, small: np.ndarray) -> float:
        """Mean silhouette of the split ``small`` (bool membership of the full class)."""
        inside = np.asarray(small, dtype=bool)[self.index]
        n_small = int(inside.sum())
        n_large = len(inside) - n_small
        if n_small == 0 or n_large == 0:
            return -1.0
        to_small = self.distances @ inside.astype(np.float64)
        to_large = self.distances.sum(axis=1) - to_small
        own = np.where(inside, to_small, to_large)
        other = np.where(inside, to_large, to_small)
        own_size = np.where(inside, n_small, n_large)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = own / (own_size - 1)
            b = other / np.where(inside, n_large, n_small)
            values = (b - a) / np.maximum(a, b)
        return float(np.mean(np.nan_to_num(values)))


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


AXIS_SPLITS = 3
# T of the confirming exclusionary reclassification: on digits, genuine minority modes of clean
# classes kept l/q >= 0.73 (ten groups, three models) and poison groups <= 0.15
# (bench/results/verdicts.md), so the cut sits between them rather than at Chen et al.'s 1
CONFIRM = 0.5
AXIS_FRACTIONS = (0.05, 0.1, 0.15, 0.2, 0.3)


def axis_starts(z: np.ndarray, axes: int) -> list[np.ndarray]:
    """k-means starts from cuts of the leading principal axes of z: for each of the first
    ``axes`` directions of largest variance and each end, the centroids of the top ``f`` of the
    projection and of the rest, f in :data:`AXIS_FRACTIONS`.

    A small, compact group far out along one direction (a poison mode holding a tenth of a
    class) is a good split by silhouette, yet k-means++ seeds rarely start there and Lloyd's
    iterations from a balanced start drift to a balanced cut of the clean variation; a start at
    the group itself converges to it. This is the principal-direction cut of Boley's PDDP
    (1998, "Principal Direction Divisive Partitioning") used as k-means starts;
    :func:`split_two_means` also keeps each cut as it is (one nearest-centroid assignment), since
    Lloyd's iterations from it can still drift to a balanced cut.
    """
    if axes < 1 or len(z) < 2 * MIN_CLASS_SIZE:
        return []
    centred = z - z.mean(axis=0)
    _, _, vh = np.linalg.svd(centred, full_matrices=False)
    starts = []
    for direction in vh[:axes]:
        projection = centred @ direction
        order = np.argsort(projection, kind="stable")
        for ranked in (order[::-1], order):
            for fraction in AXIS_FRACTIONS:
                top = max(MIN_CLASS_SIZE, round(fraction * len(z)))
                group = np.zeros(len(z), dtype=bool)
                group[ranked[:top]] = True
                starts.append(np.stack([z[~group].mean(axis=0), z[group].mean(axis=0)]))
    return starts


def split_two_means(
    x: np.ndarray,
    *,
    reduce: str,
    n_components: int,
    n_init: int,
    random_state: int,
    select: str = "silhouette",
    axis_splits: int = 0,
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
    silhouette_of = SplitSilhouettes(z, random_state)
    if select == "inertia":
        kmeans = KMeans(n_clusters=2, init="k-means++", n_init=n_init, random_state=random_state)
        found = _candidate(z, kmeans.fit(z).cluster_centers_, kmeans.labels_)
        if found is not None:
            best = (silhouette_of(found[1]), *found)
    else:
        axes = axis_starts(z, axis_splits)
        starts: list[Any] = ["k-means++"] * n_init + axes + [None] * len(axes)
        for restart, init in enumerate(starts):
            if init is None:  # an axis cut as it is (one nearest-centroid assignment)
                centers = axes[restart - n_init - len(axes)]
                nearest = np.linalg.norm(z[:, None, :] - centers[None], axis=2).argmin(axis=1)
                found = _candidate(z, centers, nearest)
            else:
                state = sklearn_seed(random_state, "restart", restart)
                kmeans = KMeans(n_clusters=2, init=init, n_init=1, random_state=state)
                found = _candidate(z, kmeans.fit(z).cluster_centers_, kmeans.labels_)
            if found is None:
                continue
            value = silhouette_of(found[1])
            if best is None or value > best[0]:
                best = (value, *found)
    if best is None:
        return None
    value, centroids, small = best
    scale = axis_spread(z, small, centroids)
    scores = separation_scores(z, centroids, scale)
    w = fisher_direction(z, small, centroids)
    fisher = fisher_scores(z, centroids, w, fisher_spread(z, small, centroids, w))
    return TwoMeansSplit(reducer, centroids, small, scale, value, scores, fisher)


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
        Dimensions kept (10 in the paper and Schulth et al. 2022).
    rule : {"smaller", "relative-size", "silhouette"}
        Which cluster is poisoned: always the smaller one (Schulth et al. 2022, ART's default); the
        smaller one if it holds < ``size_threshold`` of the class; or that and silhouette >
        ``silhouette_threshold``.
    size_threshold : float in (0, 0.5]
        ART's default 0.35.
    silhouette_threshold : float in [-1, 1)
        ART's default 0.10.
    n_init : int
        k-means restarts (k-means++ seeds).
    select : {"silhouette", "inertia"}
        Which restart is kept: the highest silhouette (default) or the lowest inertia (plain
        k-means); see the module docstring.
    axis_splits : int
        Principal axes whose cuts also start k-means (:func:`axis_starts`); 0 = k-means++
        restarts only (the papers' procedure).
    confirm : float or None
        T of the exclusionary reclassification that confirms a class the verdict names
        (:meth:`_confirm`, one retraining when a class is named and a model is given); None
        trusts the break test alone.
    seed : int
        Seeds the reduction and k-means of every class (each class gets its own derived seed)
        and the confirming retraining.
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
        "axis_splits": [NON_NEGATIVE_INT],
        "confirm": [None, POSITIVE],
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
        axis_splits: int = AXIS_SPLITS,
        confirm: float | None = CONFIRM,
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
            axis_splits=axis_splits,
            confirm=confirm,
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
        fisher = per_class_scores(len(labels))
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
                axis_splits=self.axis_splits,
                random_state=sklearn_seed(self.seed, self.name, c),
            )
            if split is None:
                scores[idx] = 0.0
                fisher[idx] = 0.0
                report[str(c)] = {"n": len(idx), "split": False}
                continue
            splits[c] = split
            scores[idx] = torch.from_numpy(split.scores)
            fisher[idx] = torch.from_numpy(split.fisher)
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
            verdict_scores=fisher,
        )

    def _confirm(
        self, evidence: Evidence, verdicts: tuple[ClassVerdict, ...], flags: Tensor
    ) -> tuple[tuple[ClassVerdict, ...], Tensor]:
        """Exclusionary reclassification (Chen et al. 2018 §4) of the classes the verdicts name.

        A class with a genuine minority mode (a second way of writing a digit) splits as clearly
        as a poisoned one, so shape alone cannot tell them apart. A fresh copy of the model is
        trained once without every suspect; each named class's suspects are then classified by
        it. With l of them predicted as their claimed label and q as the most frequent other class
        C, the group is legitimate when l/q > ``confirm`` (T, default :data:`CONFIRM`) and the
        verdict is cleared; a poison group, whose label only its trigger explained, goes to its
        source class C. Runs only when a class is named and the evidence has a model (one
        training of the architecture); ``confirm=None`` skips it.
        """
        named = [v for v in verdicts if v.poisoned]
        if self.confirm is None or evidence.model is None or not named:
            return verdicts, flags
        from poisonlab.defenses.activation_clustering import (
            reclassification_verdict,
            retrain_without,
        )
        from poisonlab.train import predict

        key = ("retrained without", self.seed, hashlib.sha256(flags.numpy().tobytes()).hexdigest())
        model = evidence.cached(
            key, lambda: retrain_without(evidence, flags, seed=self.seed, epochs=None)
        )  # detectors naming the same suspects share one retraining
        labels = evidence.labels()
        flags = flags.clone()
        kept = []
        for verdict in verdicts:
            if verdict.poisoned:
                members = (flags & (labels == verdict.label)).nonzero().flatten()
                images = evidence.data.images[members]
                predictions = predict(model, images, device=evidence.device)
                legit, own, q, other = reclassification_verdict(
                    predictions, verdict.label, evidence.num_classes, self.confirm
                )
                check = {
                    "test": "exclusionary reclassification",
                    "threshold": self.confirm,
                    "own": own,
                    "other": q,
                    "source_class": other if q else None,
                    "legitimate": legit,
                }
                verdict = replace(verdict, poisoned=not legit, check=check)
                if legit:
                    flags[members] = False
            kept.append(verdict)
        return tuple(kept), flags

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
