"""cuBLAS / cuSOLVER called directly (fedtheory.gpu_blas) against CuPy's own routines: the same
products for every layout the hot path passes (transposed views, vectors, batches, a 2-D
operand shared by a batch, empty axes), the same Cholesky factors and statuses, the same
triangular solves; and a product recorded in a CUDA graph replays with new inputs. Skipped
without CuPy and a CUDA device."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import _gpu_available

if not _gpu_available():
    pytest.skip("no CUDA GPU with CuPy on this machine", allow_module_level=True)
import cupy  # noqa: E402

from fedtheory import gpu_blas  # noqa: E402

pytestmark = pytest.mark.gpu


def _r(*shape, seed=0):
    return cupy.asarray(np.random.default_rng(seed + sum(shape)).normal(size=shape))


CASES = [
    (lambda: _r(5, 7), lambda: _r(7, 3)),
    (lambda: _r(7, 5).T, lambda: _r(7, 3)),  # transposed left operand
    (lambda: _r(5, 7), lambda: _r(3, 7).T),  # transposed right operand
    (lambda: _r(4, 3, 6), lambda: _r(4, 6, 5)),
    (lambda: _r(4, 6, 3).transpose(0, 2, 1), lambda: _r(4, 6, 5)),  # A_i^T B_i
    (lambda: _r(4, 3, 6), lambda: _r(6, 2)),  # a 2-D right operand for a whole batch
    (lambda: _r(3, 6), lambda: _r(4, 6, 2)),
    (lambda: _r(4, 5, 5), lambda: _r(4, 5)[..., None]),  # P_i x_i
    (lambda: _r(6), lambda: _r(6, 9)),  # w @ X
    (lambda: _r(5, 6), lambda: _r(6)),  # A @ theta
    (lambda: _r(6), lambda: _r(6)),
    (lambda: _r(2, 3, 4, 5), lambda: _r(2, 3, 5, 2)),  # two batch axes
    (lambda: _r(3, 1, 6), lambda: _r(3, 6, 4)),  # rows of length 1
    (lambda: _r(0, 4, 3), lambda: _r(0, 3, 2)),
    (lambda: _r(4, 0), lambda: _r(0, 3)),  # k = 0: zeros
    (lambda: _r(1, 3, 6), lambda: _r(4, 6, 2)),  # batch axes broadcast
    (lambda: _r(2, 1, 3, 6), lambda: _r(4, 6, 2)),
    (lambda: _r(8, 6)[::2], lambda: _r(6, 3)),  # rows with a stride
    (lambda: _r(5, 6)[::-1], lambda: _r(6, 3)),  # a negative stride: copied
    (lambda: _r(4, 5, 5), lambda: cupy.broadcast_to(_r(5), (4, 5))[..., None]),  # stride 0
    (lambda: cupy.broadcast_to(_r(3, 6), (4, 3, 6)), lambda: _r(4, 6, 2)),  # batch stride 0
    (lambda: _r(6, 8)[:, ::2], lambda: _r(4, 3)),  # columns with a stride: copied
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_matmul_equals_cupy(case):
    make_a, make_b = CASES[case]
    a, b = make_a(), make_b()
    got, want = gpu_blas.matmul(a, b), cupy.matmul(a, b)
    assert got.shape == want.shape
    np.testing.assert_allclose(cupy.asnumpy(got), cupy.asnumpy(want), rtol=1e-13, atol=1e-13)


def test_matmul_refuses_shapes_that_do_not_align():
    with pytest.raises(ValueError, match="do not align"):
        gpu_blas.matmul(_r(3, 4), _r(5, 2))
    with pytest.raises(ValueError, match="do not broadcast"):
        gpu_blas.matmul(_r(2, 3, 4), _r(3, 4, 2))


def test_batched_cholesky_and_solves_equal_cupy():
    rng = np.random.default_rng(1)
    M = rng.normal(size=(5, 6, 6))
    P = cupy.asarray(M @ M.transpose(0, 2, 1) + 6 * np.eye(6))
    P[3] = -cupy.eye(6)  # not positive definite
    x = P.copy()
    status = gpu_blas.potrf_batched(x)
    assert cupy.asnumpy(status).nonzero()[0].tolist() == [3]
    L = x * cupy.tri(6)
    good = [0, 1, 2, 4]
    np.testing.assert_allclose(
        cupy.asnumpy(L[good]), cupy.asnumpy(cupy.linalg.cholesky(P[good])), rtol=1e-12, atol=1e-13
    )
    b = cupy.asarray(rng.normal(size=(4, 6)))
    from cupyx.scipy.linalg import solve_triangular

    for trans in (0, 1):
        got = gpu_blas.trsm(cupy.ascontiguousarray(L[good]), b, trans)
        want = solve_triangular(L[good], b[..., None], lower=True, trans=trans)[..., 0]
        np.testing.assert_allclose(cupy.asnumpy(got), cupy.asnumpy(want), rtol=1e-12)
        one = cupy.ascontiguousarray(L[0])
        got = gpu_blas.trsm(one, b, trans)  # one matrix, four right-hand sides as rows
        want = solve_triangular(one, b.T, lower=True, trans=trans).T
        np.testing.assert_allclose(cupy.asnumpy(got), cupy.asnumpy(want), rtol=1e-12)


def test_a_recorded_product_replays_on_new_inputs():
    a, b = _r(4, 6, 3).transpose(0, 2, 1), _r(4, 6, 5)
    a, out = cupy.ascontiguousarray(a), cupy.empty((4, 3, 5))
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        cupy.copyto(out, gpu_blas.matmul(a, b))
        graph = stream.end_capture()
    a[...] = 2 * a  # new inputs in the same buffers
    graph.launch(cupy.cuda.Stream.null)
    cupy.cuda.Device().synchronize()
    np.testing.assert_allclose(cupy.asnumpy(out), cupy.asnumpy(a @ b), rtol=1e-13)
