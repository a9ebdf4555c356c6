"""Relevance heatmaps as metric-measure spaces (point clouds) for Gromov–Wasserstein clustering.

Heatmap Clustering (Schulth et al. 2022 §5.4–5.5, docs/methods.md#point-clouds) compares two images
by where their
relevance lies and how it is spread, not by pixel values: each heatmap becomes a pair ``(C, p)``
of pairwise pixel distances and relevance masses, restricted to the pixels that carry the top 99%
of the relevance.  GW distances between such pairs are invariant to translation, rotation and
reflection of the pixel grid, so a trigger patch placed at different positions still matches.

Construction, for a heatmap ``r`` of shape (H, W) already summed over colour channels:

1. optional average pooling by ``pool`` (a ``pool × pool`` block becomes one pixel);
2. ``r ← (r - min r) / (max r - min r)``, then ``r ← r / Σ r``;
3. sort pixels by ``r`` (descending, ties in raster order) and keep the smallest prefix whose
   cumulative mass exceeds ``mass`` (0.99), never a zero-mass pixel;
4. keep at most ``max_points`` of those (the heaviest), the size bound that keeps GW affordable;
5. points are the (row, col) of the kept pixels in the pooled grid,
   ``C_ij = ‖x_i - x_j‖₂ / max C`` and ``p`` = the kept masses renormalised to sum 1.

Degenerate maps: a constant map has no preferred pixels and gets uniform mass on all pixels
(then the cut and ``max_points`` apply as usual, keeping the first pixels in raster order);
among them an all-zero map (Heatmap Clustering's positive relevance of an image with none for
its label), whose relevance cannot be normalised to mass 1 (0 / 0): it is spread over the grid
rather than refused, so such a sample still gets finite distances and a score; a
cloud of a single point has ``C = [[0]]`` (no division by ``max C = 0``) and ``p = [1]``.
Non-finite relevance raises :class:`~poisonlab.errors.DataError` naming the heatmap.

Size bound (defaults ``pool=2``, ``max_points=256``).  GW costs grow as ``n²m + nm²`` per
iteration, the k-means++ seeding solves B cloud-to-cloud problems per seed, and on
near-isotropic clouds entropic GW at ε = 0.02 often needs hundreds of iterations, so n decides
the run time.  Measured on synthetic 32×32 heatmaps (bench/bench_gromov.py, blob plus corner
patch): the paper's cut keeps ~220 points (up to ~350); average-pooling by 2 first (16×16 grid)
keeps ~60 points (up to ~95) *and still 99% of the relevance*, whereas capping unpooled clouds at
128 points keeps only 92% of it on average (81% at worst).  Pooling coarsens the geometry to
2-pixel cells, which a 3×3 trigger survives, and the full Heatmap Clustering of 1,000 clouds
then fits in minutes on 2 CPU cores.  ``max_points`` is a safety cap for larger maps (never
reached at 32×32 with ``pool=2``): it keeps the heaviest points and renormalises.
``pool=1, max_points=None`` reproduces the paper's clouds exactly.  Memory: ``B·n_max²`` numbers for C.
The solvers do not need the bound to beat POT (bench/results/gromov.md times one k-means
iteration on Heatmap Clustering's pooled clouds, ``--iteration-pool 1`` on the unpooled
~220-point ones), but the k-means++ seeding's cloud-to-cloud
solves cost n³ per iteration, which is why Heatmap Clustering pools by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from poisonlab.errors import DataError
from poisonlab.explain._gw_checks import non_finite

__all__ = ["DEFAULT_MAX_POINTS", "PointClouds", "heatmaps_to_clouds", "pad_clouds"]

#: Default cap on points per cloud; see the module docstring for the measurements behind it.
DEFAULT_MAX_POINTS = 256


@dataclass(frozen=True, eq=False)
class PointClouds:
    """A batch of metric-measure spaces of unequal size, zero-padded to a common size.

    Attributes
    ----------
    C : Tensor of shape (B, n_max, n_max)
        Structure (distance) matrices, symmetric, zero outside the leading ``sizes[b]`` block.
    p : Tensor of shape (B, n_max)
        Masses, each row summing to 1, zero on padding.
    sizes : Tensor of shape (B,), int64
        Number of real points of each cloud.
    coords : Tensor of shape (B, n_max, 2), optional
        (row, col) of the points in the (pooled) heatmap grid, zero on padding; None for spaces
        that do not come from a grid.
    """

    C: Tensor
    p: Tensor
    sizes: Tensor
    coords: Tensor | None = None

    def __post_init__(self) -> None:
        b, n = self.p.shape
        if self.C.shape != (b, n, n) or self.sizes.shape != (b,):
            raise ValueError(
                f"inconsistent shapes: C {tuple(self.C.shape)}, p {tuple(self.p.shape)}, "
                f"sizes {tuple(self.sizes.shape)}"
            )
        if self.coords is not None and self.coords.shape != (b, n, 2):
            raise ValueError(f"coords must have shape {(b, n, 2)}, got {tuple(self.coords.shape)}")

    def __len__(self) -> int:
        return self.p.shape[0]

    @property
    def n_max(self) -> int:
        """Padded size (the number of columns of ``p``)."""
        return self.p.shape[1]

    def cloud(self, i: int) -> tuple[Tensor, Tensor]:
        """Unpadded ``(C, p)`` of cloud ``i``, shapes (n_i, n_i) and (n_i,)."""
        k = int(self.sizes[i])
        return self.C[i, :k, :k], self.p[i, :k]

    def subset(self, index: Tensor) -> PointClouds:
        """The clouds at ``index`` (int or bool tensor), padded only to their own largest size."""
        sizes = self.sizes[index]
        n = int(sizes.max()) if sizes.numel() else 0
        coords = None if self.coords is None else self.coords[index, :n]
        return PointClouds(self.C[index, :n, :n], self.p[index, :n], sizes, coords)


def pad_clouds(Cs: Sequence[Tensor], ps: Sequence[Tensor]) -> PointClouds:
    """Stack unpadded metric-measure spaces into a :class:`PointClouds`.

    Parameters
    ----------
    Cs : sequence of Tensor of shape (n_i, n_i)
        Symmetric structure matrices.
    ps : sequence of Tensor of shape (n_i,)
        Masses summing to 1.

    Returns
    -------
    PointClouds
        Without ``coords``; dtype and device of the first matrix.
    """
    if len(Cs) != len(ps) or not Cs:
        raise ValueError("Cs and ps must be non-empty lists of the same length")
    sizes = torch.tensor([c.shape[0] for c in Cs], dtype=torch.int64)
    n = int(sizes.max())
    C = Cs[0].new_zeros(len(Cs), n, n)
    p = Cs[0].new_zeros(len(Cs), n)
    for i, (c, w) in enumerate(zip(Cs, ps, strict=True)):
        k = c.shape[0]
        if c.shape != (k, k) or w.shape != (k,):
            raise ValueError(f"cloud {i}: C {tuple(c.shape)} and p {tuple(w.shape)} disagree")
        C[i, :k, :k] = c
        p[i, :k] = w
    return PointClouds(C, p, sizes.to(C.device))


def heatmaps_to_clouds(
    heatmaps: Tensor,
    *,
    mass: float = 0.99,
    pool: int = 2,
    max_points: int | None = DEFAULT_MAX_POINTS,
    dtype: torch.dtype = torch.float64,
) -> PointClouds:
    """Turn relevance heatmaps into padded GW point clouds, all at once.

    Parameters
    ----------
    heatmaps : Tensor of shape (B, H, W)
        Relevance summed over colour channels (any sign, any scale).
    mass : float
        Fraction of relevance to keep, in (0, 1]; the paper's "top 99%" is 0.99.
    pool : int
        Average-pooling factor applied before the cut (default 2); H and W must be divisible by
        it; 1 for the paper's full resolution.
    max_points : int or None
        Keep at most this many (heaviest) points after the cut; None for no cap.
    dtype : torch.dtype
        Floating dtype of ``C``, ``p`` and ``coords`` (float64 by default, as GW needs).

    Returns
    -------
    PointClouds
        ``C`` (B, n_max, n_max), ``p`` (B, n_max), ``sizes`` (B,), ``coords`` (B, n_max, 2), on
        the device of ``heatmaps``; ``n_max`` is the largest kept size.

    Raises
    ------
    ValueError
        On a wrong shape or out-of-range parameters; DataError (a ValueError) naming the first
        heatmap that holds NaN or inf.
    """
    if heatmaps.dim() != 3 or heatmaps.shape[0] == 0:
        raise ValueError(f"heatmaps must have shape (B, H, W) with B > 0, got {heatmaps.shape}")
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    if pool < 1 or heatmaps.shape[1] % pool or heatmaps.shape[2] % pool:
        raise ValueError(f"pool must be a positive divisor of H and W, got {pool}")
    if max_points is not None and max_points < 1:
        raise ValueError(f"max_points must be >= 1 or None, got {max_points}")
    bad = non_finite(heatmaps)
    if bad is not None:
        raise DataError(
            f"heatmap {bad[0]} of {heatmaps.shape[0]} holds {bad[1]}; expected finite relevance"
        )
    r = heatmaps.to(dtype)
    if pool > 1:
        r = F.avg_pool2d(r.unsqueeze(1), pool).squeeze(1)
    width = r.shape[2]
    r = r.flatten(1)
    lo, hi = r.amin(dim=1, keepdim=True), r.amax(dim=1, keepdim=True)
    span = hi - lo
    r = torch.where(span > 0, (r - lo) / torch.where(span > 0, span, 1.0), 1.0)
    r = r / r.sum(dim=1, keepdim=True)

    r_sorted, order = torch.sort(r, dim=1, descending=True, stable=True)
    cum = r_sorted.cumsum(dim=1)
    # Smallest prefix with cumulative mass > `mass`; rounding may leave the total below it.
    k = (cum <= mass).sum(dim=1) + 1
    k = torch.minimum(k, (r_sorted > 0).sum(dim=1))
    if max_points is not None:
        k = k.clamp(max=max_points)
    n = int(k.max())
    valid = torch.arange(n, device=r.device) < k[:, None]
    p = torch.where(valid, r_sorted[:, :n], 0.0)
    p = p / p.sum(dim=1, keepdim=True)
    idx = order[:, :n]
    coords = torch.stack([idx // width, idx % width], dim=2).to(dtype)
    coords = torch.where(valid[:, :, None], coords, 0.0)
    C = torch.cdist(coords, coords, compute_mode="donot_use_mm_for_euclid_dist")
    C = torch.where(valid[:, :, None] & valid[:, None, :], C, 0.0)
    cmax = C.amax(dim=(1, 2), keepdim=True)
    C = torch.where(cmax > 0, C / torch.where(cmax > 0, cmax, 1.0), 0.0)
    return PointClouds(C, p, k.to(torch.int64), coords)


def fit_width(x: Tensor, n: int, dims: int = 1) -> Tensor:
    """``x`` (B, w, ...) cut or zero-padded to ``n`` along dimensions 1 to ``dims`` (cut only
    padding: entries beyond a cloud's size are zero)."""
    for d in range(1, dims + 1):
        w = x.shape[d]
        if w > n:
            x = x.narrow(d, 0, n)
        elif w < n:
            x = torch.cat([x, x.new_zeros(*x.shape[:d], n - w, *x.shape[d + 1 :])], dim=d)
    return x
