"""Class-conditional Gaussian densities: fitting, Mahalanobis distances and log-likelihoods.

The numerics behind DeepFeatures (Subedar et al. 2019; Ahuja et al. 2019, "Probabilistic modeling of
deep features for out-of-distribution and adversarial detection", arXiv:1909.11786): one
full-covariance Gaussian N(μ_c, Σ_c) per class, evaluated for every sample and every class at once.

Everything is float64 and goes through a Cholesky factor L_c (Σ_c = L_c L_cᵀ): the squared
Mahalanobis distance is ||L_c⁻¹(x − μ_c)||² (one batched triangular solve for all classes) and
log|Σ_c| = 2 Σ log diag(L_c). Covariances are regularised because they are singular whenever a
class has about as many samples as dimensions, or dead (always-zero) ReLU units:

* ``full``: the unbiased sample covariance plus ε·I with ε = ``eps``·tr(Σ)/d
  (docs/methods.md#deep-features);
* ``ledoit-wolf``: scikit-learn's Ledoit–Wolf shrinkage towards a scaled identity, plus the same
  ε·I (it only matters when the shrinkage happens to be 0).

If the Cholesky factorisation still fails, ε is multiplied by 10 (at most six times). A class with
all-constant features (tr(Σ) = 0) gets ε = ``eps`` in absolute units. Classes with fewer than
``min_count`` samples get no density: their log-likelihood is −inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

COVARIANCES = ("full", "ledoit-wolf")
_LOG_2PI = math.log(2.0 * math.pi)
_MAX_JITTER_STEPS = 6
# A batched solve holds K × chunk × D float64 values at once; this bounds it to about 64 MB.
_CHUNK_ELEMENTS = 8_000_000


@dataclass(frozen=True, eq=False)
class ClassGaussians:
    """One Gaussian per class, ready to evaluate.

    means : float64 (K, D)
    scale_tril : float64 (K, D, D), lower Cholesky factor of each class covariance
    log_det : float64 (K,), log|Σ_k|
    counts : int64 (K,), number of samples each density was fitted on
    fitted : bool (K,), classes that have a density (enough samples)
    jitter : float64 (K,), the ε actually added to each diagonal
    """

    means: Tensor
    scale_tril: Tensor
    log_det: Tensor
    counts: Tensor
    fitted: Tensor
    jitter: Tensor

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.means.shape[1])

    @property
    def num_classes(self) -> int:
        """Number of classes K (fitted or not)."""
        return int(self.means.shape[0])


def _sample_covariance(centred: Tensor, method: str) -> Tensor:
    """Covariance of already-centred rows (n, D), float64."""
    n = centred.shape[0]
    if method == "ledoit-wolf":
        from sklearn.covariance import ledoit_wolf

        shrunk, _ = ledoit_wolf(centred.numpy(), assume_centered=True)
        return torch.from_numpy(shrunk).to(torch.float64)
    return centred.T @ centred / (n - 1)


def _regularised_cholesky(cov: Tensor, eps: float) -> tuple[Tensor, float]:
    """Cholesky factor of cov + ε·I with ε = eps·tr/d, raised tenfold until it succeeds."""
    d = cov.shape[0]
    trace = float(torch.trace(cov))
    jitter = eps * trace / d if trace > 0 else eps
    eye = torch.eye(d, dtype=cov.dtype)
    for _ in range(_MAX_JITTER_STEPS + 1):
        factor, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        if int(info) == 0:
            return factor, jitter
        jitter *= 10.0
    raise ValueError(f"covariance is not positive definite even with ε = {jitter / 10:g}")


def fit_class_gaussians(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    covariance: str = "full",
    eps: float = 1e-6,
    min_count: int = 2,
) -> ClassGaussians:
    """Fit N(μ_c, Σ_c) to the rows of ``features`` labelled c, for every class c.

    Parameters
    ----------
    features : Tensor of shape (N, D)
        Any float dtype; converted to float64.
    labels : Tensor of shape (N,), int64 in [0, num_classes)
    num_classes : int
    covariance : {"full", "ledoit-wolf"}
    eps : float
        Relative diagonal regulariser: ε = eps·tr(Σ_c)/D is added to each Σ_c.
    min_count : int
        Classes with fewer samples (at least 2 are needed for a covariance) get no density.

    Returns
    -------
    ClassGaussians

    Raises
    ------
    ValueError
        Unknown ``covariance``, bad shapes, ``eps`` <= 0 or ``min_count`` < 2.
    """
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {', '.join(COVARIANCES)}, got {covariance!r}")
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"features must be (N, D) with labels (N,), got {tuple(features.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if eps <= 0 or min_count < 2:
        raise ValueError(f"eps must be > 0 and min_count >= 2, got {eps} and {min_count}")
    x = features.detach().to("cpu", torch.float64)
    labels = labels.detach().cpu()
    d = x.shape[1]
    means = torch.zeros(num_classes, d, dtype=torch.float64)
    tril = torch.eye(d, dtype=torch.float64).repeat(num_classes, 1, 1)
    log_det = torch.zeros(num_classes, dtype=torch.float64)
    jitters = torch.zeros(num_classes, dtype=torch.float64)
    counts = torch.bincount(labels, minlength=num_classes)[:num_classes]
    fitted = counts >= min_count
    for k in fitted.nonzero().flatten().tolist():
        rows = x[labels == k]
        means[k] = rows.mean(0)
        cov = _sample_covariance(rows - means[k], covariance)
        try:
            tril[k], jitters[k] = _regularised_cholesky(cov, eps)
        except ValueError as exc:
            raise ValueError(f"class {k}: {exc}") from None
        log_det[k] = 2.0 * torch.log(torch.diagonal(tril[k])).sum()
    return ClassGaussians(means, tril, log_det, counts, fitted, jitters)


def mahalanobis_sq(features: Tensor, gaussians: ClassGaussians) -> Tensor:
    """Squared Mahalanobis distance of every row to every class, float64 (N, K).

    Classes without a density get +inf. The work is done in chunks of rows, each one batched
    triangular solve over all classes.
    """
    x = features.detach().to("cpu", torch.float64)
    n, d = x.shape
    if d != gaussians.dim:
        raise ValueError(f"features have {d} dimensions, the densities {gaussians.dim}")
    k = gaussians.num_classes
    out = torch.empty(n, k, dtype=torch.float64)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, k * d))
    for start in range(0, n, chunk):
        block = x[start : start + chunk]
        diff = (block[None, :, :] - gaussians.means[:, None, :]).transpose(1, 2)  # (K, D, B)
        solved = torch.linalg.solve_triangular(gaussians.scale_tril, diff, upper=False)
        out[start : start + chunk] = solved.pow(2).sum(1).T
    out[:, ~gaussians.fitted] = math.inf
    return out


def gaussian_log_likelihood(features: Tensor, gaussians: ClassGaussians) -> Tensor:
    """log N(x; μ_k, Σ_k) for every row and class, float64 (N, K); −inf for unfitted classes.

    LL_k(x) = −½ [(x − μ_k)ᵀ Σ_k⁻¹ (x − μ_k) + log|Σ_k| + D log 2π].
    """
    distance = mahalanobis_sq(features, gaussians)
    return -0.5 * (distance + gaussians.log_det[None, :] + gaussians.dim * _LOG_2PI)
