"""One class's 2-means split, shared by the clustering defenses.

Dimension reduction (PCA / FastICA), k-means++ and axis starts, the choice among restarts
(silhouette or inertia), the separation score that ranks samples, the Fisher projection the
per-class verdict reads, and the papers' cluster rules; the reasons for each are in
:mod:`poisonlab.defenses.clustering`'s docstring and docs/methods.md.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from poisonlab.seeding import derive_seed

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
    scores : separation scores of the class's samples
    fisher : their Fisher projections (:func:`fisher_scores`), which the per-class verdict reads
    fisher_axis, fisher_scale : Fisher's direction w and the spread the projections are divided
        by, to project new samples (:meth:`fisher_score`)
    """

    reducer: Any | None
    centroids: np.ndarray
    small: np.ndarray
    scale: float
    silhouette: float
    scores: np.ndarray
    fisher: np.ndarray | None = None
    fisher_axis: np.ndarray | None = None
    fisher_scale: float | None = None

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
        return separation_scores(self._reduced(x), self.centroids, self.scale)

    def fisher_score(self, x: np.ndarray) -> np.ndarray:
        """Fisher projections of new samples (raw representations), on the scale of
        ``fisher``: what the per-class verdict of the split reads."""
        if self.fisher_axis is None or self.fisher_scale is None:
            raise ValueError("this split has no Fisher projection")
        return fisher_scores(self._reduced(x), self.centroids, self.fisher_axis, self.fisher_scale)

    def _reduced(self, x: np.ndarray) -> np.ndarray:
        """New samples' raw representations in the space the split was made in."""
        z = np.asarray(x, dtype=np.float64)
        return self.reducer.transform(z) if self.reducer is not None else z


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
    spread = fisher_spread(z, small, centroids, w)
    fisher = fisher_scores(z, centroids, w, spread)
    return TwoMeansSplit(reducer, centroids, small, scale, value, scores, fisher, w, spread)


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
