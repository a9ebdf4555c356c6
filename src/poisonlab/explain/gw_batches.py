"""Entropic GW between many clouds and their second spaces, solved in size-sorted chunks.

:func:`~poisonlab.explain.gromov.entropic_gw` solves one padded batch; the functions here cut a
workload of many clouds (one shared second space, one per center, one per problem) into chunks
padded only to their own largest cloud and bounded in memory, solve each chunk, and gather the
results back in the callers' order.  Values are those of ``entropic_gw`` on each pair.  The last
:data:`TAIL_PARK` unfinished problems of every chunk are set aside and finished together after
the last chunk (:class:`~poisonlab.explain.gromov.GWState`), cut into size chunks of the same
memory budget: same iterations, one tail per solve instead of one per chunk (a warm Heatmap
Clustering update 5% faster, bench/results/gromov.md).  Where ``entropic_gw`` takes its fused
path (CPU, Newton inner solves: :mod:`~poisonlab.explain._gw_fused`) each chunk is solved to
its end one problem at a time, a tail costs no dispatch, and nothing is parked; there
:func:`gw_to_spaces` cuts no chunks at all and the solver reads the clouds in place
(:mod:`~poisonlab.explain._gw_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from poisonlab.explain._gw_rows import fused_settings, solve_sources, stack_sources
from poisonlab.explain.gromov import GWResult, GWState, entropic_gw
from poisonlab.explain.point_cloud import PointClouds, fit_width

__all__ = [
    "CHUNK_ELEMENTS",
    "chunk_clouds",
    "gather_chunks",
    "gw_to_centers",
    "gw_to_one",
    "gw_to_spaces",
    "size_chunks",
    "solve_pairs",
]

#: Default memory budget of one chunk, in tensor elements (2**24 float64 = 128 MiB per tensor).
CHUNK_ELEMENTS = 2**24

#: When a solve has several size chunks, each chunk sets aside its last ``TAIL_PARK`` unfinished
#: problems (:class:`~poisonlab.explain.gromov.GWState`) and these are finished together after
#: the last chunk (in size chunks of their own, same budget): the slowest problems of a chunk
#: iterate for hundreds of outer iterations in batches of a few, where each iteration costs its
#: ~100 tensor calls' dispatch whatever the batch, so one tail instead of one per chunk saves
#: most of that.
TAIL_PARK = 64


def gw_to_one(
    clouds: PointClouds,
    C: Tensor,
    p: Tensor,
    *,
    epsilon: float,
    T0: Tensor | None = None,
    potentials: tuple[Tensor, Tensor] | None = None,
    keep_plans: bool = True,
    chunk_elements: int = CHUNK_ELEMENTS,
    chunks: list[tuple[Tensor, PointClouds]] | None = None,
    tail_park: int = TAIL_PARK,
    **solver: float | str | None,
) -> GWResult:
    """Entropic GW from every cloud of a batch to one shared space, in size-sorted chunks.

    Clouds are sorted by size and solved in chunks padded only to their own largest size, each
    chunk holding at most ``chunk_elements`` elements per ``(B, n, n)``/``(B, n, m)`` tensor,
    so memory stays bounded and padding waste small.  Values are exactly those of
    :func:`entropic_gw` on each pair (cloud first, shared space second).

    Parameters
    ----------
    clouds : PointClouds
        The B first spaces, ``C`` of shape (B, n_max, n_max).
    C : Tensor of shape (m, m)
        Shared second structure matrix (a center or barycenter).
    p : Tensor of shape (m,)
        Its masses.
    epsilon : float
        Entropic regularisation (see :func:`entropic_gw`).
    T0 : Tensor of shape (B, n_max, m), optional
        Starting plans (warm start), e.g. the plans to a previous version of ``C``.
    potentials : tuple of Tensor of shapes (B, n_max) and (B, m), optional
        Sinkhorn potentials matching ``T0``.
    keep_plans : bool
        Return the plans (B × n_max × m numbers); False for cloud-to-cloud distances.
    chunk_elements : int
        Memory budget per chunk, in elements (also for the chunks' shared tail).
    chunks : list of (Tensor, PointClouds), optional
        Precomputed :func:`chunk_clouds` of ``clouds`` with this ``chunk_elements`` (saves
        copying them on repeated calls).
    tail_park : int
        With several chunks, each sets aside its last ``tail_park`` unfinished problems, finished
        together after the last chunk (:data:`TAIL_PARK`; 0: every chunk to its end).  The
        iterations do not depend on it, the values only through round-off.
    **solver
        ``max_iter``, ``tol``, ``sinkhorn_max_iter``, ``sinkhorn_tol`` or ``inexact`` for
        :func:`entropic_gw`.

    Returns
    -------
    GWResult
        ``value`` (B,), ``plan`` (B, n_max, m) or None, ``n_iter`` and ``converged`` (B,), and
        ``potentials`` of shapes (B, n_max) and (B, m).
    """
    return _solve_chunks(
        chunks if chunks is not None else chunk_clouds(clouds, C.shape[0], chunk_elements),
        lambda idx: (C, p),
        batch=len(clouds),
        width=clouds.n_max,
        like=clouds.C,
        m=C.shape[0],
        epsilon=epsilon,
        T0=T0,
        potentials=potentials,
        keep_plans=keep_plans,
        chunk_elements=chunk_elements,
        tail_park=tail_park,
        solver=solver,
    )


def _solve_chunks(
    chunks: list[tuple[Tensor, PointClouds]],
    second: Callable[[Tensor], tuple[Tensor, Tensor]],
    *,
    batch: int,
    width: int,
    like: Tensor,
    m: int,
    epsilon: float,
    T0: Tensor | None,
    potentials: tuple[Tensor, Tensor] | None,
    keep_plans: bool,
    chunk_elements: int,
    tail_park: int,
    solver: dict[str, float | str | None],
) -> GWResult:
    """:func:`entropic_gw` chunk by chunk, the second space of chunk ``idx`` being
    ``second(idx)``, gathered into one batch-sized :class:`GWResult` (dtype and device of
    ``like``; plans and first potentials ``width`` wide).  The problems the chunks park are
    finished in size chunks of their own, within the same ``chunk_elements`` budget."""
    dev, dt = like.device, like.dtype
    value = torch.empty(batch, dtype=dt, device=dev)
    n_iter = torch.empty(batch, dtype=torch.int64, device=dev)
    converged = torch.empty(batch, dtype=torch.bool, device=dev)
    plan = torch.zeros(batch, width, m, dtype=dt, device=dev) if keep_plans else None
    pot_f = torch.zeros(batch, width, dtype=dt, device=dev)
    pot_g = torch.zeros(batch, m, dtype=dt, device=dev)

    def store(idx: Tensor, res: GWResult) -> None:
        # full width: a resumed problem overwrites its parked entries, maybe wider
        value[idx], n_iter[idx], converged[idx] = res.value, res.n_iter, res.converged
        pot_f[idx], pot_g[idx] = fit_width(res.potentials[0], width), res.potentials[1]
        if plan is not None and res.plan is not None:
            plan[idx] = fit_width(res.plan, width)

    park = tail_park if len(chunks) > 1 else 0
    parked: list[_Parked] = []
    for idx, sub in chunks:
        n = sub.n_max
        C2, p2 = second(idx)
        res = entropic_gw(
            sub.C,
            sub.p,
            C2,
            p2,
            epsilon=epsilon,
            T0=None if T0 is None else T0[idx, :n],
            potentials=None if potentials is None else (potentials[0][idx, :n], potentials[1][idx]),
            park=park,
            **solver,  # type: ignore[arg-type]
        )
        store(idx, res)
        if res.parked is not None:
            parked.append((idx, sub, C2, p2, res.parked))
    # the chunks' slowest problems, finished together (same iterations)
    for idx, res in _resume_parked(parked, m, epsilon, chunk_elements, solver):
        store(idx, res)
    return GWResult(value, plan, n_iter, converged, (pot_f, pot_g))


#: A chunk's parked problems: the chunk's positions, clouds, second space(s) and masses, state.
_Parked = tuple[Tensor, PointClouds, Tensor, Tensor, GWState]


def _resume_parked(
    parked: list[_Parked],
    m: int,
    epsilon: float,
    chunk_elements: int,
    solver: dict[str, float | str | None],
) -> list[tuple[Tensor, GWResult]]:
    """Finish the problems parked by several chunks: sorted by cloud size and cut by
    :func:`size_chunks` with the chunks' own budget (memory bound and padding splits as for
    the chunks), each group padded to its largest cloud; ``(positions in the caller's batch,
    result)`` per group."""
    if not parked:
        return []
    src = torch.cat([torch.full_like(st.index, j) for j, (*_, st) in enumerate(parked)])
    local = torch.cat([torch.arange(len(st.index), device=st.index.device) for *_, st in parked])
    sizes = torch.cat([sub.sizes[st.index.to(sub.sizes.device)] for _, sub, _, _, st in parked])
    # one second space for all (gw_to_one): keep it 2-D, as the chunks had it
    C2_0, q_0 = parked[0][2], parked[0][3]
    shared = C2_0.dim() == 2 and q_0.dim() == 1
    shared = shared and all(C2 is C2_0 and q is q_0 for _, _, C2, q, _ in parked)
    out = []
    for ids in size_chunks(sizes, m, chunk_elements):
        ids = ids.to(src.device)
        n = int(sizes[ids].max())
        rows, C1, p, C2, q, kept = [], [], [], [], [], []
        src_ids, local_ids = src[ids], local[ids]
        for j in torch.unique(src_ids).tolist():
            idx, sub, C2_chunk, q_chunk, st = parked[j]
            k = local_ids[src_ids == j]  # positions in st
            i = st.index[k]  # positions in the chunk
            rows.append(idx[i])
            C1.append(fit_width(sub.C[i], n, dims=2))
            p.append(fit_width(sub.p[i], n))
            if not shared:
                C2.append(C2_chunk.expand(len(k), m, m) if C2_chunk.dim() == 2 else C2_chunk[i])
                q.append(q_chunk.expand(len(k), m) if q_chunk.dim() == 1 else q_chunk[i])
            kept.append(
                (
                    fit_width(st.plan[k], n),
                    fit_width(st.f[k], n),
                    st.g[k],
                    st.step[k],
                    st.loss[k],
                    st.done_iter[k],
                )
            )
        resume = GWState(
            torch.arange(sum(len(r) for r in rows), device=src.device),
            *(torch.cat(parts) for parts in zip(*kept, strict=True)),
        )
        res = entropic_gw(
            torch.cat(C1),
            torch.cat(p),
            C2_0 if shared else torch.cat(C2),
            q_0 if shared else torch.cat(q),
            epsilon=epsilon,
            resume=resume,
            **solver,  # type: ignore[arg-type]
        )
        out.append((torch.cat(rows), res))
    return out


def gw_to_centers(
    clouds: PointClouds,
    centers: list[tuple[Tensor, Tensor]],
    *,
    epsilon: float,
    T0: list[Tensor] | None = None,
    potentials: list[tuple[Tensor, Tensor]] | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
    tail_park: int = TAIL_PARK,
    **solver: float | str | None,
) -> list[GWResult]:
    """:func:`gw_to_one` for several shared spaces of one size at once: one batched solve.

    Every cloud is paired with every center in the same batch (:func:`gw_to_spaces`), so the
    per-iteration overhead of the solver (many small kernels, one Python loop) is paid once for
    all centers instead of once per center; each problem still iterates and stops on its own.

    Parameters
    ----------
    clouds : PointClouds
        The B first spaces.
    centers : list of (Tensor, Tensor)
        k shared spaces ``(C, p)``, all with the same number m of points.
    epsilon : float
        Entropic regularisation.
    T0 : list of Tensor of shape (B, n_max, m), optional
        Starting plans per center (all or none).
    potentials : list of (Tensor, Tensor), optional
        Matching Sinkhorn potentials per center, shapes (B, n_max) and (B, m).
    chunk_elements : int
        Memory budget per chunk, in elements, for all centers together.
    tail_park : int
        As for :func:`gw_to_one`.
    **solver
        As for :func:`gw_to_one`.

    Returns
    -------
    list of GWResult
        One per center, plans included.
    """
    return gw_to_spaces(
        [(clouds, C, p) for C, p in centers],
        epsilon=epsilon,
        T0=T0,
        potentials=potentials,
        chunk_elements=chunk_elements,
        tail_park=tail_park,
        **solver,
    )


def gw_to_spaces(
    pairs: list[tuple[PointClouds, Tensor, Tensor]],
    *,
    epsilon: float,
    T0: Sequence[Tensor | None] | None = None,
    potentials: Sequence[tuple[Tensor, Tensor] | None] | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
    tail_park: int = TAIL_PARK,
    **solver: float | str | None,
) -> list[GWResult]:
    """Entropic GW from every cloud of several batches to that batch's own space, in one solve.

    ``pairs[j] = (clouds_j, C_j, p_j)`` asks for the distances of every cloud of ``clouds_j`` to
    the space ``(C_j, p_j)``; all spaces have the same number m of points.  All these problems
    are sorted by cloud size and solved together in size chunks (:func:`solve_pairs`), so
    the Python loops of the solver (outer iterations, Sinkhorn sweeps) run once for all of them
    instead of once per batch: this is how Heatmap Clustering solves the k-means steps of all
    classes and restarts at once (:func:`~poisonlab.explain.gw_kmeans.gw_kmeans_many`).  Each
    problem iterates and stops on its own criterion, as it would alone.

    Parameters
    ----------
    pairs : list of (PointClouds, Tensor, Tensor)
        Clouds ``(B_j, n_j, n_j)`` and a space ``C`` of shape (m, m) with masses ``p`` (m,).
    epsilon : float
        Entropic regularisation.
    T0 : list of (Tensor of shape (B_j, n_j, m) or None), optional
        Starting plans per pair (warm start); None entries (or None) start from ``p qᵀ``.
        Where some pairs start warm, the others must too (all or none).
    potentials : list of ((Tensor, Tensor) or None), optional
        Matching Sinkhorn potentials, shapes (B_j, n_j) and (B_j, m).
    chunk_elements : int
        Memory budget per chunk, in elements.
    tail_park : int
        As for :func:`gw_to_one`.
    **solver
        As for :func:`gw_to_one`.

    Returns
    -------
    list of GWResult
        One per pair: values (B_j,), plans (B_j, n_j, m), iterations, flags and potentials.
    """
    if not pairs:
        return []
    m = pairs[0][1].shape[0]
    if any(C.shape != (m, m) or p.shape != (m,) for _, C, p in pairs):
        raise ValueError("gw_to_spaces needs spaces of one size")
    sources = [clouds for clouds, _, _ in pairs]
    which = torch.cat(
        [torch.full((len(c),), j, dtype=torch.int64) for j, c in enumerate(sources)]
    ).to(sources[0].C.device)
    index = torch.cat([torch.arange(len(c), device=which.device) for c in sources])
    spaces = torch.stack([C for _, C, _ in pairs])
    masses = torch.stack([p for _, _, p in pairs])
    warm_T0 = _stack_padded(T0, sources, m) if T0 is not None and T0[0] is not None else None
    pots = None
    if potentials is not None and potentials[0] is not None:
        f = _stack_padded([fg[0] for fg in potentials], sources, None)  # type: ignore[index]
        pots = (f, torch.cat([fg[1] for fg in potentials]))  # type: ignore[index]
    tensors = (*(c.C for c in sources), spaces, masses, warm_T0, *(pots or ()))
    firsts = tuple(c.p for c in sources)
    settings = fused_settings(tensors, (firsts, masses), epsilon, solver)  # type: ignore[arg-type]
    if settings is not None:  # one problem at a time: no size chunks, clouds read in place
        C1, p1, rows = stack_sources(sources, which, index)
        res, _ = solve_sources(
            (C1, p1),
            rows,
            spaces,
            masses,
            which,
            epsilon=epsilon,
            settings=settings,
            T0=warm_T0,
            potentials=pots,
        )
    else:
        res = solve_pairs(
            gather_chunks(sources, which, index, m, chunk_elements),
            spaces[which],
            masses[which],
            epsilon=epsilon,
            T0=warm_T0,
            potentials=pots,
            chunk_elements=chunk_elements,
            tail_park=tail_park,
            **solver,  # type: ignore[arg-type]
        )
    out, start = [], 0
    for clouds in sources:
        part, n = slice(start, start + len(clouds)), clouds.n_max
        start += len(clouds)
        out.append(
            GWResult(
                res.value[part],
                None if res.plan is None else fit_width(res.plan[part], n),
                res.n_iter[part],
                res.converged[part],
                (fit_width(res.potentials[0][part], n), res.potentials[1][part]),
            )
        )
    return out


def _stack_padded(
    parts: Sequence[Tensor | None], sources: list[PointClouds], m: int | None
) -> Tensor:
    """Concatenate per-batch tensors (B_j, n_j[, m]) into one (ΣB_j, max n_j[, m]), zero-padded."""
    width = max(c.n_max for c in sources)
    if any(x is None for x in parts):
        raise ValueError("warm starts must be given for all batches or none")
    return torch.cat([fit_width(x, width) for x in parts])  # type: ignore[arg-type]


def gather_chunks(
    sources: list[PointClouds],
    which: Tensor,
    index: Tensor,
    m: int,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> list[tuple[Tensor, PointClouds]]:
    """Size chunks (:func:`size_chunks`) of the clouds ``sources[which[i]]`` cloud ``index[i]``.

    Returns ``(positions, clouds)`` per chunk: ``positions`` index the list ``(which, index)``
    and ``clouds`` holds those clouds, padded only to the chunk's largest size.
    """
    offsets = torch.tensor([0] + [len(c) for c in sources[:-1]]).cumsum(0).to(which.device)
    sizes = torch.cat([c.sizes for c in sources])[offsets[which] + index]
    chunks = []
    for ids in size_chunks(sizes, m, chunk_elements):
        src, rows = which[ids], index[ids]
        used = torch.unique(src).tolist()
        if len(used) == 1:
            chunks.append((ids, sources[used[0]].subset(rows)))
            continue
        chunk_sizes = sizes[ids]
        n = int(chunk_sizes.max())
        first = sources[used[0]]
        C = first.C.new_zeros(len(ids), n, n)
        p = first.p.new_zeros(len(ids), n)
        for s in used:
            pos = torch.nonzero(src == s).flatten()
            w = min(n, sources[s].n_max)
            C[pos, :w, :w] = sources[s].C[rows[pos], :w, :w]
            p[pos, :w] = sources[s].p[rows[pos], :w]
        chunks.append((ids, PointClouds(C, p, chunk_sizes)))
    return chunks


def solve_pairs(
    chunks: list[tuple[Tensor, PointClouds]],
    C: Tensor,
    p: Tensor,
    *,
    epsilon: float,
    T0: Tensor | None = None,
    potentials: tuple[Tensor, Tensor] | None = None,
    keep_plans: bool = True,
    chunk_elements: int = CHUNK_ELEMENTS,
    tail_park: int = TAIL_PARK,
    **solver: float | str | None,
) -> GWResult:
    """Entropic GW of P pairs (cloud, own second space), the clouds given as size chunks.

    Parameters
    ----------
    chunks : list of (Tensor, PointClouds)
        ``(positions, clouds)`` covering ``range(P)`` once (:func:`gather_chunks`).
    C : Tensor of shape (P, m, m)
        The second space of each pair.
    p : Tensor of shape (P, m)
        Its masses.
    epsilon : float
        Entropic regularisation.
    T0 : Tensor of shape (P, w, m), optional
        Starting plans, w at least the largest cloud size.
    potentials : tuple of Tensor of shapes (P, w) and (P, m), optional
        Matching Sinkhorn potentials.
    keep_plans : bool
        Return the plans.
    chunk_elements : int
        Memory budget per chunk, in elements: that of ``chunks``, also used to cut the problems
        the chunks set aside unfinished (their shared tail).
    tail_park : int
        As for :func:`gw_to_one`.
    **solver
        As for :func:`entropic_gw`.

    Returns
    -------
    GWResult
        Per pair, plans (P, w, m) and first potentials (P, w) with w the largest chunk width.
    """
    return _solve_chunks(
        chunks,
        lambda idx: (C[idx], p[idx]),
        batch=C.shape[0],
        width=max(sub.n_max for _, sub in chunks),
        like=C,
        m=C.shape[-1],
        epsilon=epsilon,
        T0=T0,
        potentials=potentials,
        keep_plans=keep_plans,
        chunk_elements=chunk_elements,
        tail_park=tail_park,
        solver=solver,
    )


def chunk_clouds(
    clouds: PointClouds, m: int, chunk_elements: int = CHUNK_ELEMENTS
) -> list[tuple[Tensor, PointClouds]]:
    """``(index, clouds.subset(index))`` for each of :func:`size_chunks`."""
    return [(idx, clouds.subset(idx)) for idx in size_chunks(clouds.sizes, m, chunk_elements)]


def size_chunks(
    sizes: Tensor, m: int, chunk_elements: int = CHUNK_ELEMENTS, *, min_elements: int = 2**21
) -> list[Tensor]:
    """Indices of clouds grouped by size, ascending, for batched solves with little padding.

    A chunk closes when adding the next cloud would exceed ``B·(n² + 8 n m) > chunk_elements``
    (memory), or, once its padded problems hold ``B·n·(n + m) > min_elements`` numbers, when the
    next cloud is more than 25% larger than its smallest (padding waste: the cost grows as n²).
    Below that size a solver step costs its tensor calls' dispatch rather than arithmetic, and
    every chunk is a separate run of the solver's loops, its slowest problems iterating alone:
    on the digits scan (Heatmap Clustering of ten classes of 9-28-point clouds in one batch)
    one chunk per solve took 22.6 CPU-s against 27.2 s for chunks split at 25% once they held
    32 clouds (five chunks; this rule makes two there, and leaves the chunks of the ~60-point
    clouds of a 1,000-image class about as they were).

    Parameters
    ----------
    sizes : Tensor of shape (B,), int64
        Cloud sizes.
    m : int
        Size of the other space of each pair.
    chunk_elements : int
        Memory budget per chunk (a chunk holds at least one cloud whatever the budget).
    min_elements : int
        Chunks smaller than this (in ``B·n·(n + m)``) are not split for padding.

    Returns
    -------
    list of Tensor
        Index tensors covering ``range(B)`` exactly once.
    """
    order = torch.argsort(sizes.cpu(), stable=True)
    n_sorted = sizes.cpu()[order].tolist()
    chunks, start = [], 0
    for end in range(1, len(order) + 1):
        if end < len(order):
            count, n = end + 1 - start, n_sorted[end]
            too_big = count * (n * n + 8 * n * m) > chunk_elements
            too_uneven = count * n * (n + m) > min_elements and 4 * n > 5 * max(n_sorted[start], 1)
            if not (too_big or too_uneven):
                continue
        chunks.append(order[start:end].to(sizes.device))
        start = end
    return chunks
