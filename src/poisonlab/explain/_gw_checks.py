"""Finiteness checks at the edges of the GW code: spaces refused where they enter, solver values
checked where they leave.

Clouds and centers enter through :func:`~poisonlab.explain.gw_kmeans.gw_kmeans_many` and
:func:`~poisonlab.explain.gw_kmeans.gw_distances_to_centers` (:func:`check_spaces`, once per
call, in the compute dtype); every solve ends in :func:`check_values` (both paths of
:func:`~poisonlab.explain.gromov.entropic_gw` and the fused rows of
:mod:`~poisonlab.explain._gw_rows`), one ``isfinite`` over the B values.  Nothing runs inside
the solvers' loops; only a failing check looks further, to name what was bad.

Without them a NaN in a cloud flowed into every distance to the centers it joined, and a
non-finite mass sent the inner solves to their sweep budget on every outer iteration (a
17-cloud k-means with one infinite mass had not finished after 5 minutes).  A NaN value comes from an overflow: the inner solves
work with the costs ``|C|² / ε``, which float32 holds only up to ~1e38 (measured on Heatmap
Clustering's normalised clouds: ε = 1e-6 finite in float32, ε = 1e-10 NaN in float32 and finite
in float64, ε = 1e-30 NaN in both), so the error says which dtype and ratio it met.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from poisonlab.errors import DataError, NumericalError

__all__ = ["check_spaces", "check_values", "non_finite"]


def non_finite(x: Tensor) -> tuple[int, str] | None:
    """The first index along dimension 0 of ``x`` whose entries are not all finite, and what it
    holds (``"NaN"``, else ``"inf"``); None when every entry is finite.  One sum first (a NaN
    or inf entry makes it non-finite; finite entries overflowing it only cost the exact pass)."""
    if bool(torch.isfinite(x.sum())):
        return None
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return None
    i = int(bad.reshape(x.shape[0], -1).any(dim=1).nonzero()[0, 0])
    return i, "NaN" if bool(torch.isnan(x[i]).any()) else "inf"


def check_spaces(
    C: Tensor,
    p: Tensor,
    *,
    name: Callable[[int], str],
    source: tuple[Tensor, Tensor] | None = None,
) -> None:
    """DataError naming the first space of ``C`` (B, n, n) and ``p`` (B, n) whose structure
    matrix or masses hold NaN or inf, whose masses are negative, or whose masses do not sum to 1.

    ``name`` names space ``b`` in the message (e.g. ``"cloud 4 of 17"``); ``source`` are the
    tensors ``C`` and ``p`` were converted from: where they are finite and the conversion is
    not, the message says the values exceed the compute dtype.
    """
    for i, (x, field, expected) in enumerate(
        ((C, "structure matrix C", "finite distances"), (p, "masses p", "finite masses"))
    ):
        bad = non_finite(x)
        if bad is None:
            continue
        b, kind = bad
        where = f"{name(b)}: its {field}"
        if source is not None and non_finite(source[i][b : b + 1]) is None:
            top = float(source[i][b].abs().max())
            raise DataError(
                f"{where} holds values up to {top:.3g}, beyond {x.dtype} (the compute dtype); "
                "compute in float64 (dtype=None on float64 clouds) or rescale them"
            )
        raise DataError(f"{where} holds {kind}; expected {expected}")
    if bool((p < 0).any()):
        b = int((p < 0).any(dim=1).nonzero()[0, 0])
        raise DataError(
            f"{name(b)}: its masses p hold a negative value ({float(p[b].min()):.3g});"
            " expected masses >= 0 summing to 1"
        )
    totals = p.sum(dim=1, dtype=torch.float64)
    tol = max(1e-4, 64 * torch.finfo(p.dtype).eps)
    off = (totals - 1.0).abs() > tol
    if bool(off.any()):
        b = int(off.nonzero()[0, 0])
        raise DataError(
            f"{name(b)}: its masses p sum to {float(totals[b]):.6g}; expected 1 (to {tol:g})"
        )


def check_values(
    value: Tensor,
    n_iter: Tensor,
    *,
    epsilon: float,
    spaces: tuple[Tensor, Tensor, Tensor, Tensor],
    skip: Tensor | None = None,
    name: Callable[[int], str] = lambda b: f"problem {b}",
) -> None:
    """NumericalError naming the first problem whose GW value is NaN or inf (``skip``: problems
    whose value is not final, e.g. parked ones), its dtype, its outer iterations and the cost
    scale ``max |C1|² + max |C2|²`` against ``epsilon``; ``spaces`` are the solve's
    ``(C1, p, C2, q)`` (read only on failure), ``name`` names problem ``b``."""
    ok = torch.isfinite(value)
    if skip is not None:
        ok = ok | skip
    if bool(ok.all()):
        return
    b = int((~ok).nonzero()[0, 0])
    kind = "NaN" if bool(torch.isnan(value[b])) else "inf"
    head = (
        f"entropic GW gave {kind} for {name(b)} ({int((~ok).sum())} of {value.numel()} "
        f"problems) in {value.dtype}, stopping after {int(n_iter[b])} outer iterations"
    )
    for x, label in zip(spaces, ("C1", "p", "C2", "q"), strict=True):
        if non_finite(x.reshape(1, -1)) is not None:
            raise NumericalError(f"{head}: its input {label} holds NaN or inf; expected finite")
    scale = float(spaces[0].abs().max()) ** 2 + float(spaces[2].abs().max()) ** 2
    advice = "use a larger epsilon or rescale the structure matrices"
    if value.dtype != torch.float64:
        advice = f"compute in float64, or {advice}"
    raise NumericalError(
        f"{head}: an overflow, with costs up to {scale:.3g} against epsilon={epsilon:g} "
        f"(ratio {scale / epsilon:.3g}); {advice}"
    )
