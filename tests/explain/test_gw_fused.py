"""The fused (compiled, one problem at a time) entropic GW path against the tensor path and POT."""

from __future__ import annotations

import logging
import os
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import ot
import pytest
import torch

from poisonlab.explain.gromov import entropic_gw, gw_loss
from poisonlab.explain.point_cloud import PointClouds, pad_clouds

CLUSTERING = {"check_every": 1, "value_rtol": 1e-5}  # gw_kmeans' distances (inexact inner solves)
WARM_CAPPED = {"check_every": 1, "value_rtol": 1e-5, "max_iter": 50}  # its barycenter couplings
POT_RULES = {"check_every": 10}  # POT's plan criterion only


def _clouds(seed: int, sizes: list[int], dtype: torch.dtype = torch.float64) -> PointClouds:
    rng = np.random.default_rng(seed)
    Cs, ps = [], []
    for n in sizes:
        x = torch.as_tensor(rng.normal(size=(n, 2)))
        C = torch.cdist(x, x)
        Cs.append((C / C.max()).to(dtype))
        p = torch.as_tensor(rng.random(n) + 0.2)
        ps.append((p / p.sum()).to(dtype))
    return pad_clouds(Cs, ps)


def _mixed(dtype: torch.dtype) -> tuple[PointClouds, torch.Tensor, torch.Tensor]:
    """Three dozen clouds of 5-40 points in one padded batch, against one 8-point space."""
    sizes = np.random.default_rng(1).integers(5, 41, size=36).tolist()
    space = _clouds(2, [8], dtype)
    return _clouds(1, sizes, dtype), space.C[0], space.p[0]


@pytest.mark.parametrize("solver", [CLUSTERING, POT_RULES])
def test_float64_runs_the_iterations_of_the_tensor_path(solver: dict[str, float]) -> None:
    """Same algorithm and stopping rules: in float64 the same iteration count for every
    problem, and values, plans and potentials equal to round-off."""
    clouds, C, p = _mixed(torch.float64)
    ref = entropic_gw(clouds.C, clouds.p, C, p, epsilon=0.02, fused=False, **solver)  # type: ignore[arg-type]
    res = entropic_gw(clouds.C, clouds.p, C, p, epsilon=0.02, fused=True, **solver)  # type: ignore[arg-type]
    assert torch.equal(res.n_iter, ref.n_iter) and torch.equal(res.converged, ref.converged)
    torch.testing.assert_close(res.value, ref.value, rtol=1e-11, atol=0)
    assert res.plan is not None and ref.plan is not None
    torch.testing.assert_close(res.plan, ref.plan, rtol=0, atol=1e-12)
    for ours, theirs in zip(res.potentials, ref.potentials, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)


def test_float32_agrees_with_the_tensor_path_to_round_off() -> None:
    """float32 (the clustering dtype): other summation orders and a polynomial exp change the
    last bits, which a stopping rule can turn into one iteration more or less."""
    clouds, C, p = _mixed(torch.float32)
    ref = entropic_gw(clouds.C, clouds.p, C, p, epsilon=0.02, fused=False, **CLUSTERING)  # type: ignore[arg-type]
    res = entropic_gw(clouds.C, clouds.p, C, p, epsilon=0.02, fused=True, **CLUSTERING)  # type: ignore[arg-type]
    assert res.value.dtype == torch.float32 and res.plan is not None and ref.plan is not None
    rel = (res.value - ref.value).abs() / ref.value
    assert float(rel.median()) < 1e-5 and float(rel.max()) < 1e-4
    assert int((res.n_iter == ref.n_iter).sum()) >= 0.8 * len(rel)
    assert float((res.plan - ref.plan).abs().max()) < 1e-4
    torch.testing.assert_close(res.plan.sum(dim=2), clouds.p)  # rows exact, padding empty


def test_values_equal_pot() -> None:
    rng = np.random.default_rng(5)
    firsts = [
        _clouds(int(s), [int(n)])
        for s, n in zip(rng.integers(0, 99, 4), (6, 19, 12, 27), strict=True)
    ]
    second = _clouds(9, [10])
    batch = pad_clouds([c.C[0] for c in firsts], [c.p[0] for c in firsts])
    res = entropic_gw(batch.C, batch.p, second.C[0], second.p[0], epsilon=0.05, fused=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = [
            ot.gromov.entropic_gromov_wasserstein2(
                c.C[0].numpy(), second.C[0].numpy(), c.p[0].numpy(), second.p[0].numpy(),
                "square_loss", 0.05,
            )
            for c in firsts
        ]  # fmt: skip
    torch.testing.assert_close(res.value, torch.tensor(ref, dtype=torch.float64), rtol=1e-7, atol=0)


def test_padding_inside_and_around_a_cloud_changes_nothing() -> None:
    """Zero-mass points (trailing, as clouds are padded, or between real ones) and padded
    columns of the second space leave the value and the real part of the plan unchanged."""
    one = _clouds(3, [15])
    C, p = one.C[0], one.p[0]
    space = _clouds(4, [6])
    C2, q = space.C[0], space.p[0]
    alone = entropic_gw(C[None], p[None], C2, q, epsilon=0.05, fused=True)
    inner = torch.tensor([0, 1, 2, 3, 4, 5, 6, 15, 7, 8, 9, 10, 11, 12, 13, 14, 16])  # 15, 16: pad
    wide_C = torch.zeros(17, 17, dtype=C.dtype)
    wide_C[:15, :15] = C
    wide_C = wide_C[inner][:, inner]
    wide_p = torch.cat([p, p.new_zeros(2)])[inner]
    wide_C2 = torch.zeros(8, 8, dtype=C.dtype)
    wide_C2[:6, :6] = C2
    wide_q = torch.cat([q, q.new_zeros(2)])
    padded = entropic_gw(wide_C[None], wide_p[None], wide_C2, wide_q, epsilon=0.05, fused=True)
    torch.testing.assert_close(padded.value, alone.value, rtol=1e-10, atol=0)
    assert torch.equal(padded.n_iter, alone.n_iter)
    assert padded.plan is not None and alone.plan is not None
    real = inner.argsort()[:15]
    torch.testing.assert_close(padded.plan[0, real, :6], alone.plan[0], rtol=0, atol=1e-12)
    assert (
        float(padded.plan[0, inner.argsort()[15:]].abs().sum() + padded.plan[0, :, 6:].abs().sum())
        == 0
    )
    assert float(padded.potentials[0][0, inner.argsort()[15:]].abs().sum()) == 0


def test_warm_start_and_max_iter_cap_as_the_tensor_path() -> None:
    """A warm start (plans and potentials of a nearby space, as k-means' barycenter updates)
    and problems stopped unconverged at max_iter, with their values: as the tensor path."""
    clouds, C, p = _mixed(torch.float64)
    first = entropic_gw(clouds.C, clouds.p, C, p, epsilon=0.02, fused=False, **CLUSTERING)  # type: ignore[arg-type]
    moved = C + 0.05 * _clouds(7, [8]).C[0]
    warm = {"T0": first.plan, "potentials": first.potentials}
    for solver in (WARM_CAPPED, {"check_every": 1, "max_iter": 4, "tol": 1e-12}):
        ref = entropic_gw(clouds.C, clouds.p, moved, p, epsilon=0.02, fused=False, **warm, **solver)  # type: ignore[arg-type]
        res = entropic_gw(clouds.C, clouds.p, moved, p, epsilon=0.02, fused=True, **warm, **solver)  # type: ignore[arg-type]
        assert torch.equal(res.n_iter, ref.n_iter) and torch.equal(res.converged, ref.converged)
        torch.testing.assert_close(res.value, ref.value, rtol=1e-11, atol=0)
    assert bool((res.n_iter == 4).all()) and not bool(res.converged.any())
    assert res.plan is not None
    torch.testing.assert_close(res.value, gw_loss(clouds.C, clouds.p, moved, p, res.plan))


def test_parks_nothing_and_refuses_what_it_cannot_solve() -> None:
    clouds, C, p = _mixed(torch.float64)
    res = entropic_gw(clouds.C, clouds.p, C, p, epsilon=0.05, park=4, fused=True)
    assert res.parked is None and not bool(res.value.isnan().any())
    with pytest.raises(ValueError, match="Newton inner solves"):
        entropic_gw(clouds.C, clouds.p, C, p, epsilon=0.05, inner="sinkhorn", fused=True)
    with pytest.raises(ValueError, match="float32 or float64"):
        entropic_gw(clouds.C.half(), clouds.p.half(), C.half(), p.half(), epsilon=0.05, fused=True)


def test_newton_left_unfinished_goes_on_by_sinkhorn(caplog: pytest.LogCaptureFixture) -> None:
    """Masses of unequal totals: no plan meets the marginal tolerance, so every inner solve
    ends in the Sinkhorn fallback at its sweep budget (logged, as the tensor path does), and
    the result stays finite with rows exact."""
    clouds, C, p = _mixed(torch.float64)
    q = p * 1.001
    with caplog.at_level(logging.INFO, logger="poisonlab.explain.gromov"):
        res = entropic_gw(
            clouds.C[:3],
            clouds.p[:3],
            C,
            q,
            epsilon=0.05,
            max_iter=2,
            sinkhorn_max_iter=20,
            fused=True,
        )
    assert "stopped at sinkhorn_max_iter=20" in caplog.text
    assert res.plan is not None and bool(res.value.isfinite().all())
    torch.testing.assert_close(res.plan.sum(dim=2), clouds.p[:3])


def test_mass_totals_no_inner_solve_can_match_take_the_tensor_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Totals 1 and 1.001: every Newton solve would end in the fused path's slow Sinkhorn
    fallback, so by default (fused=None) entropic_gw solves them as the tensor path does;
    totals equal to round-off still go the fused way."""
    from poisonlab.explain import _gw_fused

    calls: list[int] = []
    solve = _gw_fused.solve_rows

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return solve(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_gw_fused, "solve_rows", spy)
    clouds, C, p = _mixed(torch.float64)
    kw = {"epsilon": 0.05, "max_iter": 2, "sinkhorn_max_iter": 20}
    res = entropic_gw(clouds.C[:3], clouds.p[:3], C, p * 1.001, **kw)  # type: ignore[arg-type]
    ref = entropic_gw(clouds.C[:3], clouds.p[:3], C, p * 1.001, fused=False, **kw)  # type: ignore[arg-type]
    assert not calls
    assert torch.equal(res.value, ref.value) and torch.equal(res.n_iter, ref.n_iter)
    entropic_gw(clouds.C[:3], clouds.p[:3], C, p * (1 + 1e-15), **kw)  # type: ignore[arg-type]
    assert calls


def test_the_cache_key_covers_the_inlined_inner_solve(monkeypatch: pytest.MonkeyPatch) -> None:
    """numba checks a cached entry against this module's file and the entry function's own
    bytecode and closure values only: the digest of what is compiled in from elsewhere (the
    inner solve's source, the constants it freezes) is a closure value of the entry point, so
    editing _gw_fused_newton.py alone compiles anew instead of loading stale loops."""
    from poisonlab.explain import _gw_fused

    cells = [c.cell_contents for c in _gw_fused._solve_batch.py_func.__closure__ or ()]
    digest = _gw_fused._foreign_digest()
    assert cells == [digest]
    monkeypatch.setattr(_gw_fused, "NEWTON_MAX_STEPS", _gw_fused.NEWTON_MAX_STEPS + 1)
    assert _gw_fused._foreign_digest() != digest


def test_compiling_shows_as_a_stage_of_its_own(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first solve of a dtype in a process compiles the loops (or loads them from the
    cache) in a progress stage that names it; a second solve goes straight to work."""
    from poisonlab import progress
    from poisonlab.explain import _gw_fused

    clouds, C, p = _mixed(torch.float32)
    monkeypatch.setattr(progress, "lines_enabled", lambda: True)
    monkeypatch.setattr(_gw_fused._solve_batch, "overloads", {})  # as in a fresh process
    entropic_gw(clouds.C[:3], clouds.p[:3], C, p, epsilon=0.02, fused=True)
    entropic_gw(clouds.C[:3], clouds.p[:3], C, p, epsilon=0.02, fused=True)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["GW solver"]
    assert "loops for float32" in lines[0] and "done in" in lines[0]


def test_no_writable_numba_cache_falls_back_to_the_tensor_path(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where numba finds no folder to write its cache to (a read-only install and home), it
    refuses the module's cache=True functions with a RuntimeError at import: the solve takes
    the tensor path with one warning saying how to fix it, instead of failing."""
    from poisonlab.explain import _gw_dispatch

    def refuse(name: str) -> None:
        raise RuntimeError(f"cannot cache function '_kernel_exp': no locator available for {name}")

    clouds, C, p = _mixed(torch.float32)
    monkeypatch.setattr(_gw_dispatch.importlib, "import_module", refuse)
    _gw_dispatch._numba_missing.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="poisonlab.explain.gromov"):
            auto = entropic_gw(clouds.C, clouds.p, C, p, epsilon=0.02, **CLUSTERING)  # type: ignore[arg-type]
            entropic_gw(clouds.C, clouds.p, C, p, epsilon=0.02, **CLUSTERING)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="NUMBA_CACHE_DIR"):
            entropic_gw(clouds.C, clouds.p, C, p, epsilon=0.02, fused=True)
    finally:
        _gw_dispatch._numba_missing.cache_clear()
    tensor = entropic_gw(clouds.C, clouds.p, C, p, epsilon=0.02, fused=False, **CLUSTERING)  # type: ignore[arg-type]
    assert torch.equal(auto.value, tensor.value)
    warned = [r.getMessage() for r in caplog.records if "NUMBA_CACHE_DIR" in r.getMessage()]
    assert len(warned) == 1 and "tensor path" in warned[0]


def test_float32_log_of_the_newton_trials_is_exact_to_its_last_bit() -> None:
    """The vectorised float32 log of the compiled Newton trials: within 0.6 ulp of the exact
    logarithm from the smallest subnormal to e^9 (the C library's logf: 0.81), and -inf at 0,
    NaN below 0 and for NaN, inf for inf, as the C library's."""
    import numba

    from poisonlab.explain._gw_fused_newton import _log_into

    @numba.njit
    def log_of(x, out, bits):  # type: ignore[no-untyped-def]
        _log_into(x, out, bits, x.shape[0])

    rng = np.random.default_rng(0)
    special = [0.0, -0.0, -1.0, np.inf, np.nan, 1.0, 2.0, 0.5, 1e-45, 1.1754942e-38, 2**0.5]
    x = np.concatenate([np.exp(rng.uniform(-103.0, 9.0, 200_000)), special]).astype(np.float32)
    out = np.empty_like(x)
    log_of(x, out, np.empty(len(x), np.int32))
    with np.errstate(divide="ignore", invalid="ignore"):
        exact = np.log(x.astype(np.float64))
    finite = np.isfinite(exact)
    assert int(finite.sum()) == len(x) - 5
    ulps = np.abs(out[finite] - exact[finite]) / np.spacing(np.abs(out[finite])).astype(np.float64)
    assert float(ulps.max()) < 0.6
    np.testing.assert_array_equal(out[~finite], exact[~finite].astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_row_products_are_the_matrix_products(dtype: type) -> None:
    """The vector code of the gradient's products (rows 5, 2 and 1 at a time, rows of a
    multiple of 16 entries): ``A[:m, :p] @ B[:p]`` in its rows of ``out`` and nothing else."""
    import numba

    from poisonlab.explain._gw_fused import _times

    @numba.njit
    def times(A, B, out, m, p):  # type: ignore[no-untyped-def]
        _times(A, B, out, m, p)

    rng = np.random.default_rng(3)
    for m, p, w in [(10, 58, 64), (8, 10, 16), (3, 31, 32), (1, 93, 96)]:
        A, B = rng.normal(size=(m + 2, p + 5)).astype(dtype), rng.normal(size=(p, w)).astype(dtype)
        out = np.full((m + 1, w), 7.0, dtype)
        times(A, B, out, m, p)
        exact = A[:m, :p].astype(np.float64) @ B.astype(np.float64)
        np.testing.assert_allclose(out[:m], exact, rtol=0, atol=p * float(np.finfo(dtype).eps) * 8)
        assert np.all(out[m] == 7.0)


_PRODUCTS_WITHOUT_FMA = """
import numba, numpy as np
from poisonlab.explain._gw_fused import _times

@numba.njit
def times(A, B, out, m, p):
    _times(A, B, out, m, p)

@numba.njit(fastmath={"contract", "reassoc", "arcp", "nsz"}, error_model="numpy")
def loops(A, B, out, m, p):
    for j in range(m):
        for i in range(out.shape[1]):
            out[j, i] = 0.0
        for k in range(p):
            a = A[j, k]
            for i in range(out.shape[1]):
                out[j, i] += a * B[k, i]

rng = np.random.default_rng(4)
for dtype in (np.float32, np.float64):
    A, B = rng.normal(size=(10, 58)).astype(dtype), rng.normal(size=(58, 64)).astype(dtype)
    ours, theirs = np.empty((10, 64), dtype), np.empty((10, 64), dtype)
    times(A, B, ours, 10, 58)
    loops(A, B, theirs, 10, 58)
    print(dtype.__name__, int((ours != theirs).sum()))
"""


def test_compiled_row_products_on_a_cpu_without_fma_are_those_of_the_loops(
    tmp_path: pathlib.Path,
) -> None:
    """Compiled for an x86-64 without FMA (NUMBA_CPU_NAME=generic, a cache of its own): the
    vector products are bitwise those of numba's loops, a multiply and an add per entry (an
    FMA asked of such a CPU became a C library call per entry, 10x slower than the loops)."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the generic x86-64 target")
    env = {
        **os.environ,
        "NUMBA_CPU_NAME": "generic",
        "NUMBA_CACHE_DIR": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", _PRODUCTS_WITHOUT_FMA],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert out.split() == ["float32", "0", "float64", "0"]
