"""The fused CUDA kernel of FedNL's top-K learning (fedtheory.cuda_kernels) against the NumPy
path's compiled kernel: the same selected entries (ties and NaN included), so the learned
Hessians are bit-identical, and the same norms to rounding; a whole FedNL run on the GPU equals
the run on NumPy. Skipped without CuPy or a CUDA device."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedtheory import make_method, run
from fedtheory.testing import make_problem
from fedtheory.trace import TIMING

cupy = pytest.importorskip("cupy")
try:
    _devices = cupy.cuda.runtime.getDeviceCount()
except Exception:  # no driver or no device
    _devices = 0
if not _devices:
    pytest.skip("no CUDA device", allow_module_level=True)

from fedtheory import cuda_kernels  # noqa: E402 (imports CuPy: only once a GPU is known)

pytestmark = pytest.mark.gpu
ALPHAS = ("one", 0.5, "rule1")


def _tied_case(rng, N, d):
    """H and T of small integers (exact ties in |T - H| everywhere, zeros among them), some
    matrices symmetric and some not, with coordinates where T and H agree (zero rows and
    columns of the difference) and, now and then, differences of +-1e-3 off the integers or
    subnormal ones."""
    low, high = [(-3, 4), (-1, 2), (-40, 41)][rng.integers(3)]
    H = rng.integers(low, high, size=(N, d, d)).astype(float)
    T = rng.integers(low, high, size=(N, d, d)).astype(float)
    if rng.random() < 0.5:
        H, T = H + H.transpose(0, 2, 1), T + T.transpose(0, 2, 1)
    for i in rng.permutation(d)[: rng.integers(0, max(1, d // 3))]:
        T[:, i, :], T[:, :, i] = H[:, i, :], H[:, :, i]
    if rng.random() < 0.3:
        T += 1e-3 * rng.choice([-1.0, 0.0, 1.0], size=T.shape)
    if rng.random() < 0.3:  # subnormal differences beside the zeros (the same exponent)
        tiny = rng.random(T.shape) < 0.05
        H[tiny] = 0.0
        T[tiny] = rng.choice([5e-324, -1e-310, 2.5e-308, 0.0], size=int(tiny.sum()))
    return H, T


def _cases(n, seed):
    """n random cases (N, d, Kc, alpha, norm, after, rows) and one with d = 300."""
    rng = np.random.default_rng(seed)
    for c in range(n + 1):
        N = int(rng.integers(1, 7))
        d = 300 if c == n else int(rng.integers(1, 41))
        tri = d * (d + 1) // 2
        Kc = int(rng.integers(1, tri + 3)) if c != n else 8 * d
        alpha = ALPHAS[rng.integers(3)]
        norm = [None, "frobenius"][rng.integers(2)]
        after = bool(rng.integers(2))
        rows = None if rng.random() < 0.5 else rng.permutation(N)[: rng.integers(1, N + 1)]
        yield rng, N, d, Kc, alpha, norm, after, rows


def _learn_both(method, H0, T, rows, norm, after, device_rows=False):
    """method.learn on NumPy and on CuPy from the same H0: (H host, norms host, H GPU as host
    array, norms GPU as host array or None)."""
    m = T.shape[0] if rows is None else rows.size
    T = np.ascontiguousarray(T[:m])
    H_host = H0.copy()
    n_host = method.learn(H_host, T, rows, norm=norm, after=after)
    H_gpu = cupy.asarray(H0)
    g_rows = cupy.asarray(rows) if device_rows and rows is not None else rows
    n_gpu = method.learn(H_gpu, cupy.asarray(T), g_rows, norm=norm, after=after)
    return H_host, n_host, cupy.asnumpy(H_gpu), None if n_gpu is None else cupy.asnumpy(n_gpu)


def test_the_fused_kernel_equals_the_numpy_kernel_bit_for_bit(monkeypatch):
    """Many random cases with many exact ties (integer matrices), Kc from 1 past the triangle,
    alpha 1, 0.5 and rule 1, rows None or a permuted subset (host or device indices), norms
    none / before / after: H bit-identical, norms to 1e-13; every GPU call is one call of the
    fused kernel."""
    calls = []
    fused = cuda_kernels.topk_learn
    monkeypatch.setattr(cuda_kernels, "topk_learn", lambda *a: calls.append(a[3]) or fused(*a))
    n = 0
    for rng, N, d, Kc, alpha, norm, after, rows in _cases(160, seed=15):
        method = make_method("fednl", {"compressor": "topK", "Kc": Kc, "alpha": alpha})
        H0, T = _tied_case(rng, N, d)
        device_rows = bool(rng.integers(2))
        Hh, nh, Hg, ng = _learn_both(method, H0, T, rows, norm, after, device_rows)
        where = (N, d, Kc, alpha, norm, after, rows)
        np.testing.assert_array_equal(Hg, Hh, err_msg=str(where))
        if norm is None:
            assert nh is None and ng is None
        else:
            np.testing.assert_allclose(ng, nh, rtol=1e-13, atol=0, err_msg=str(where))
        n += 1
    assert len(calls) == n


def test_ties_go_to_the_larger_positions_and_nan_propagates():
    """Six tied entries and K = 2 keep (2, 2) and (1, 2); a NaN difference counts as the
    largest magnitude and reaches H (and the norms), as on the host; K past the triangle
    keeps every entry."""
    method = make_method("fednl", {"compressor": "topK", "Kc": 2})
    H = cupy.zeros((1, 3, 3))
    method.learn(H, cupy.ones((1, 3, 3)), None)
    expected = np.zeros((3, 3))
    expected[2, 2] = expected[1, 2] = expected[2, 1] = 1.0
    np.testing.assert_array_equal(cupy.asnumpy(H[0]), expected)

    rng = np.random.default_rng(3)
    H0, T = _tied_case(rng, 4, 9)
    T[1, 0, 5] = np.nan
    T[2, 3, 3] = np.nan
    T[3, 7, 2] = np.inf
    for norm, after in ((None, False), ("frobenius", False), ("frobenius", True)):
        for Kc in (1, 3, 17, 45, 50):
            m = make_method("fednl", {"compressor": "topK", "Kc": Kc, "alpha": 0.5})
            Hh, nh, Hg, ng = _learn_both(m, H0, T, None, norm, after)
            assert np.isnan(Hg[1, 0, 5]) and np.isnan(Hg[1, 5, 0]) and np.isnan(Hg[2, 3, 3])
            np.testing.assert_array_equal(Hg, Hh)  # NaN where the host has NaN
            if norm is not None:
                assert np.isnan(ng[1]) and np.isnan(ng[2])
                np.testing.assert_allclose(ng, nh, rtol=1e-13, atol=0)

    every = make_method("fednl", {"compressor": "topK", "Kc": 100})
    H = cupy.zeros((1, 3, 3))
    every.learn(H, cupy.full((1, 3, 3), 2.0), None)
    np.testing.assert_array_equal(cupy.asnumpy(H[0]), np.full((3, 3), 2.0))


def test_every_k_on_normal_subnormal_and_zero_magnitudes():
    """One difference of normal, subnormal (the exponent of 0, so the first digit of the
    select does not tell them apart) and zero entries, every K: the K-th largest among the
    normal ones, the subnormal ones and the zeros."""
    d = 10
    D = np.zeros((d, d))
    iu, ju = np.triu_indices(d)
    pos = np.random.default_rng(5).permutation(iu.size)
    D[iu[pos[:5]], ju[pos[:5]]] = [1.0, -2.0, 1.0, 3e-300, -1.0]
    D[iu[pos[5:11]], ju[pos[5:11]]] = [5e-324, -1e-323, 1e-310, -2e-310, 1e-310, 2.2e-308]
    H0 = np.arange(2.0 * d * d).reshape(2, d, d)
    H0[:, iu[pos[5:11]], ju[pos[5:11]]] = 0.0  # else the subnormal ones vanish in T - H0
    T = H0 + np.stack([D, D.T])
    assert (T - H0)[0, iu[pos[10]], ju[pos[10]]] == 2.2e-308
    for Kc in range(1, iu.size + 2):
        method = make_method("fednl", {"compressor": "topK", "Kc": Kc, "alpha": 0.5})
        Hh, nh, Hg, ng = _learn_both(method, H0, T, None, "frobenius", True)
        np.testing.assert_array_equal(Hg, Hh, err_msg=f"Kc = {Kc}")
        np.testing.assert_allclose(ng, nh, rtol=1e-13, atol=0)


def test_the_kernel_refuses_what_it_does_not_compute():
    H, T = cupy.zeros((2, 3, 3)), cupy.zeros((2, 3, 3))
    with pytest.raises(ValueError, match="norm_kind"):
        cuda_kernels.topk_learn(H, T, None, 2, 1.0, 3, cupy.empty(2))
    with pytest.raises(ValueError, match="float64"):
        cuda_kernels.topk_learn(H.astype(cupy.float32), T, None, 2, 1.0, 0, None)
    with pytest.raises(ValueError, match="rows"):
        cuda_kernels.topk_learn(H, T, cupy.arange(2, dtype=cupy.int32), 2, 1.0, 0, None)


def test_a_spectral_norm_on_the_gpu_keeps_the_array_path(monkeypatch):
    """l^k in the spectral norm needs an eigenvalue problem: the array path, not the kernel."""
    monkeypatch.setattr(cuda_kernels, "topk_learn", lambda *a: pytest.fail("kernel called"))
    rng = np.random.default_rng(4)
    H0, T = _tied_case(rng, 3, 6)
    T = T + T.transpose(0, 2, 1)
    H0 = H0 + H0.transpose(0, 2, 1)
    method = make_method("fednl", {"compressor": "topK", "Kc": 5})
    Hh, nh, Hg, ng = _learn_both(method, H0, T, None, "spectral", False)
    np.testing.assert_array_equal(Hg, Hh)
    np.testing.assert_allclose(ng, nh, rtol=1e-12)


@pytest.mark.parametrize(
    "name,params",
    [
        ("fednl", {"option": 2, "compressor": "topK", "Kc": 12, "l_norm": "frobenius"}),
        (
            "fednl",
            {"option": 2, "compressor": "topK", "Kc": 7, "alpha": "rule1", "l_norm": "frobenius"},
        ),
        ("fednl_pp", {"compressor": "topK", "Kc": 9, "l_norm": "frobenius"}),
    ],
)
def test_a_fednl_run_on_the_gpu_equals_the_run_on_numpy(name, params):
    """A whole run (the fused kernel every round) logs the rows of the NumPy run to 1e-10."""
    host = make_problem(21, N=6, d=8)
    method = make_method(name, params)
    S = None if method.full_participation_only else 3
    a = run(host, method, 12, participation=S, drift_metrics=False)
    b = run(host.to("cupy"), method, 12, participation=S, drift_metrics=False)
    assert b.meta["backend"] == "cupy" and a.status == b.status
    assert len(a.rows) == len(b.rows) == 13
    for ra, rb in zip(a.rows, b.rows, strict=True):
        for c in ra:
            if c in TIMING or (isinstance(ra[c], float) and math.isnan(ra[c])):
                continue
            assert abs(rb[c] - ra[c]) <= 1e-10 * abs(ra[c]) + 1e-13, (ra["round"], c, ra[c], rb[c])


# ------------------------------------------------------------------ fused SPD solve
def _spd_stack(rng, B, n):
    M = rng.normal(size=(B, n, n))
    return M @ M.transpose(0, 2, 1) / n + np.eye(n)


@pytest.mark.parametrize(
    ("n", "kind"),
    [(n, "block") for n in (1, 2, 7, 8, 9, 32, 33, 64, 123, 200, 238)]
    + [(n, "warp") for n in (1, 2, 7, 31, 32, 33, 50, 63, 64)],
)
def test_the_fused_solve_equals_numpy_and_reports_the_failed_pivot(n, kind):
    """cuda_kernels.chol_solve (factor and solve in one block's shared memory, or one warp's
    part of it) against NumPy's solve; a matrix that is not positive definite gets the
    1-based index of its failed pivot (LAPACK's convention: the first leading minor that is
    not positive), the others are solved; a NaN stops the factorisation at its pivot."""
    if not cuda_kernels.chol_solve_fits(n):
        pytest.skip(f"n = {n} does not fit this device's shared memory")
    rng = np.random.default_rng(n)
    P = _spd_stack(rng, 8, n)
    b = rng.normal(size=(8, n))
    P[4] = np.eye(n)
    P[4, n - 1, n - 1] = -1.0  # the last pivot fails
    if n > 2:
        P[6, 1, 1] = np.nan  # the second pivot is NaN
    if n > 20:  # two pivots fail, in different panels: the first one is reported
        P[7] = np.eye(n)
        P[7, 10, 10] = P[7, 20, 20] = -1.0
    x, status = cuda_kernels.chol_solve(cupy.asarray(P), cupy.asarray(b), kind=kind)
    want_status = [0, 0, 0, 0, n, 0, 2 if n > 2 else 0, 11 if n > 20 else 0]
    assert cupy.asnumpy(status).tolist() == want_status
    good = [k for k in range(8) if want_status[k] == 0]
    want = np.linalg.solve(P[good], b[good][..., None])[..., 0]
    np.testing.assert_allclose(cupy.asnumpy(x)[good], want, rtol=1e-10, atol=1e-12)


def test_the_fused_solve_reads_the_upper_triangle_and_any_size_order():
    """Only the upper triangle is read (the lower may hold anything); matrices of a larger,
    a smaller, then the larger size again solve, with the same compiled kernel (7 columns per
    lane for 193 to 224 rows: its shared-memory limit is set once, not lowered by a smaller
    launch) and with others; sizes past the limit are refused."""
    rng = np.random.default_rng(3)
    for n in (200, 193, 200, 5, 64):
        P = _spd_stack(rng, 3, n)
        b = rng.normal(size=(3, n))
        garbage = np.tril(rng.normal(size=(3, n, n)), -1) * 1e3
        x, status = cuda_kernels.chol_solve(cupy.asarray(np.triu(P) + garbage), cupy.asarray(b))
        assert not cupy.asnumpy(status).any()
        want = np.linalg.solve(P, b[..., None])[..., 0]
        np.testing.assert_allclose(cupy.asnumpy(x), want, rtol=1e-10, atol=1e-12)
    assert cuda_kernels.chol_solve_fits(200) and not cuda_kernels.chol_solve_fits(300)
    with pytest.raises(ValueError, match="does not fit"):
        cuda_kernels.chol_solve(cupy.eye(300)[None], cupy.ones((1, 300)))


def test_the_warp_solve_of_a_large_stack_matches_the_block_solve():
    """Many small matrices (a batched sweep's 1,001 clients, not a multiple of the warps per
    block): the warp kernel, picked by default for n <= CHOL_WARP_MAX, solves each as the
    block kernel does, and reports each failed pivot at its own matrix; larger n are refused
    by the warp kernel."""
    rng = np.random.default_rng(11)
    n, B = 50, 1001
    P = _spd_stack(rng, B, n)
    b = rng.normal(size=(B, n))
    bad = {3: 1, 500: 17, 1000: 50}  # matrix -> failed pivot (1-based)
    for m, k in bad.items():
        P[m, k - 1, k - 1] = -1.0
    want_status = np.zeros(B, dtype=np.int32)
    for m, k in bad.items():
        want_status[m] = k
    xw, sw = cuda_kernels.chol_solve(cupy.asarray(P), cupy.asarray(b))
    xb, sb = cuda_kernels.chol_solve(cupy.asarray(P), cupy.asarray(b), kind="block")
    np.testing.assert_array_equal(cupy.asnumpy(sw), want_status)
    np.testing.assert_array_equal(cupy.asnumpy(sb), want_status)
    ok = want_status == 0
    want = np.linalg.solve(P[ok], b[ok][..., None])[..., 0]
    for x in (xw, xb):
        np.testing.assert_allclose(cupy.asnumpy(x)[ok], want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="warp kernel solves n <= 64 whose"):
        cuda_kernels.chol_solve(cupy.eye(65)[None], cupy.ones((1, 65)), kind="warp")


def test_spd_solve_takes_the_fused_kernel_and_names_the_client(monkeypatch):
    """linalg.spd_solve on CuPy stacks (and one matrix with one right-hand side) goes through
    the fused kernel where it fits; a failure names the client, at once or deferred."""
    from fedtheory import linalg
    from fedtheory.errors import FactorizationError

    calls = []
    real = cuda_kernels.chol_solve

    def spy(P, b):
        calls.append(P.shape)
        return real(P, b)

    monkeypatch.setattr(cuda_kernels, "chol_solve", spy)
    rng = np.random.default_rng(5)
    P = cupy.asarray(_spd_stack(rng, 4, 9))
    b = cupy.asarray(rng.normal(size=(4, 9)))
    want = np.linalg.solve(cupy.asnumpy(P), cupy.asnumpy(b)[..., None])[..., 0]
    np.testing.assert_allclose(cupy.asnumpy(linalg.spd_solve(P, b)), want, rtol=1e-10)
    np.testing.assert_allclose(cupy.asnumpy(linalg.spd_solve(P[1], b[1])), want[1], rtol=1e-10)
    assert calls == [(4, 9, 9), (1, 9, 9)]
    P[2, 3, 3] = 0.0
    P[2, 3, :3] = P[2, :3, 3] = 0.0
    with pytest.raises(FactorizationError, match="client 12 is not positive definite"):
        linalg.spd_solve(P, b, labels=[10, 11, 12, 13])
    checks = linalg.DeferredChecks()
    with checks.active():
        linalg.spd_solve(P, b, labels=[10, 11, 12, 13])
    with pytest.raises(FactorizationError, match="client 12 is not positive definite"):
        checks.check()
    with pytest.raises(FactorizationError, match="the mixed preconditioner is not positive"):
        linalg.spd_solve(P[2], b[2], what="mixed preconditioner")


def test_the_fused_logistic_terms_equal_the_numpy_formulas():
    """One kernel for the logistic chain: the same losses and weights as the NumPy path, for
    margins up to |z| = 1e3 (no overflow) and padded rows (sw = 0)."""
    from fedtheory.objectives import _logistic_terms

    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(scale=5, size=400), [1e3, -1e3, 0.0, 40.0, -40.0]])
    y = rng.choice([-1.0, 1.0], size=z.size)
    sw = rng.random(z.size) * (rng.random(z.size) > 0.1)
    want = _logistic_terms(z, y, sw, np)
    got = _logistic_terms(cupy.asarray(z), cupy.asarray(y), cupy.asarray(sw), cupy)
    for g, w in zip(got, want, strict=True):
        assert np.isfinite(cupy.asnumpy(g)).all()
        np.testing.assert_allclose(cupy.asnumpy(g), w, rtol=1e-14, atol=1e-300)


def test_the_fused_curvature_average_is_the_numpy_one_bit_for_bit():
    """FedPAC's rho Theta + (1 - rho) H in one kernel: the same bits as the NumPy path's
    block loop (each product and the sum rounded once, no multiply-add contraction), for a
    Theta stack, one broadcast matrix, and a rho whose 1 - rho is inexact."""
    from fedtheory.methods._local import HessianEMA

    rng = np.random.default_rng(21)
    H = rng.normal(size=(37, 9, 9))
    for Th in (rng.normal(size=(37, 9, 9)), rng.normal(size=(9, 9))):
        for rho in (0.9, 0.3, 1 / 3):
            ema = HessianEMA(rho, 0.0, True)
            want = ema.ema(Th, H)
            got = cupy.asnumpy(ema.ema(cupy.asarray(Th), cupy.asarray(H)))
            np.testing.assert_array_equal(got, want)
