"""cuBLAS and cuSOLVER called directly (ctypes), for the products and factorisations of a round
on CuPy arrays, so that the round can be recorded as a CUDA graph (issue 15, item 1).

CuPy's own wrappers refuse to run while a stream is being captured ("calling cuBLAS API during
stream capture is currently unsupported", and the same for cuSOLVER), although cuBLAS supports
capture and the batched Cholesky factorisation used here needs no host round trip. This
module holds its own cuBLAS and cuSOLVER handles, set on CuPy's current stream before every
call, with a cuBLAS workspace of its own (cuBLAS's advice for graphs), and offers the few
operations the hot path needs:

- :func:`matmul`: NumPy's ``matmul`` for float64 arrays (1-D operands promoted and batch axes
  broadcast as NumPy does), one ``cublasDgemmStridedBatched`` call; a transposed view is passed
  to cuBLAS as a transposed operand and a batch axis of length 1 as a stride of 0, not copied;
- :func:`potrf_batched`: ``cusolverDnDpotrfBatched`` on a stack factored in place, its status
  left on the device;
- :func:`trsm`: a triangular solve with one or many matrices (``cublasDtrsm`` /
  ``cublasDtrsmBatched``).

Only called with CuPy arrays; the NumPy path never imports this module's CuPy parts. The
libraries are the ones CuPy itself loaded (found in the process's memory map), so their CUDA
version is CuPy's.
"""

from __future__ import annotations

import ctypes
import math
import threading
from typing import Any

_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL] = {}
_local = threading.local()
#: cuBLAS workspace of the module's handle (cuBLAS's advice for graph capture: without one set
#: by the user it may allocate during a capture).
WORKSPACE_BYTES = 2**25

OP_N, OP_T = 0, 1
FILL_LOWER, FILL_UPPER = 0, 1
SIDE_LEFT, SIDE_RIGHT = 0, 1
DIAG_NON_UNIT = 0


def _loaded(stem: str, module: str) -> ctypes.CDLL:
    """The shared library ``stem`` (e.g. "libcublas.so") that CuPy's ``module`` loaded."""
    import importlib

    with _lock:
        if stem in _libs:
            return _libs[stem]
        importlib.import_module(module)  # makes CuPy load its copy of the library
        path = None
        with open("/proc/self/maps") as maps:
            for line in maps:
                name = line.rsplit(" ", 1)[-1].strip()
                if f"/{stem}" in name and "Lt" not in name.rsplit("/", 1)[-1]:
                    path = name
                    break
        lib = ctypes.CDLL(path or stem)
        _libs[stem] = lib
        return lib


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"{what} failed with status {status}")


def _cublas() -> tuple[ctypes.CDLL, ctypes.c_void_p]:
    """The cuBLAS library and this thread's handle (on the current device), set on CuPy's
    current stream."""
    import cupy

    lib = _loaded("libcublas.so", "cupy_backends.cuda.libs.cublas")
    dev = cupy.cuda.Device().id
    handles = _local.__dict__.setdefault("cublas", {})
    if dev not in handles:
        h = ctypes.c_void_p()
        _check(lib.cublasCreate_v2(ctypes.byref(h)), "cublasCreate")
        # its own allocation, not the current allocator's: a first call inside a graph
        # recording would otherwise take it from the recording's pool, freed with the graph
        work = cupy.cuda.Memory(WORKSPACE_BYTES)
        _check(
            lib.cublasSetWorkspace_v2(
                h, ctypes.c_void_p(work.ptr), ctypes.c_size_t(WORKSPACE_BYTES)
            ),
            "cublasSetWorkspace",
        )
        handles[dev] = (h, work)
    h = handles[dev][0]
    stream = ctypes.c_void_p(cupy.cuda.get_current_stream().ptr)
    _check(lib.cublasSetStream_v2(h, stream), "cublasSetStream")
    return lib, h


def _cusolver() -> tuple[ctypes.CDLL, ctypes.c_void_p]:
    import cupy

    lib = _loaded("libcusolver.so", "cupy_backends.cuda.libs.cusolver")
    dev = cupy.cuda.Device().id
    handles = _local.__dict__.setdefault("cusolver", {})
    if dev not in handles:
        h = ctypes.c_void_p()
        _check(lib.cusolverDnCreate(ctypes.byref(h)), "cusolverDnCreate")
        handles[dev] = h
    h = handles[dev]
    stream = ctypes.c_void_p(cupy.cuda.get_current_stream().ptr)
    _check(lib.cusolverDnSetStream(h, stream), "cusolverDnSetStream")
    return lib, h


_ONE, _ZERO = ctypes.c_double(1.0), ctypes.c_double(0.0)
_int, _ptr = ctypes.c_int, ctypes.c_void_p


def _layout(x: Any) -> tuple[Any, bool, int, int] | None:
    """(array, row_major, ld, batch_stride) in elements for a (B, r, c) view, or None when
    cuBLAS cannot take it as it is. A dimension of length 1 takes whatever stride fits."""
    B, r, c = x.shape
    it = x.itemsize
    sb, s0, s1 = (s // it for s in x.strides)
    if any(s * it != t for s, t in zip((sb, s0, s1), x.strides, strict=True)):
        return None
    if c == 1:
        s1 = 1
    if r == 1:
        s0 = max(c, 1) if s1 == 1 else s0
    if s1 == 1 and s0 >= max(1, c):
        major, ld = True, s0
    elif s0 == 1 and s1 >= max(1, r):
        major, ld = False, s1
    else:
        return None
    if B == 1:
        sb = 0
    if sb < 0 or min(s0, s1) < 0:
        return None
    return x, major, ld, sb


def _as_batched(x: Any) -> tuple[Any, bool, int, int]:
    """x (r, c) or (..., r, c) as cuBLAS operand data: (array, row_major, ld, batch_stride);
    batch stride 0 for a 2-D operand (shared by the whole batch)."""
    import cupy

    if x.ndim == 2:
        v = x[None]
    else:
        v = x.reshape(-1, *x.shape[-2:]) if x.ndim > 3 else x
    got = _layout(v)
    if got is None:
        v = cupy.ascontiguousarray(v)
        got = _layout(v)
    assert got is not None
    arr, major, ld, sb = got
    if x.ndim == 2:
        sb = 0
    return arr, major, ld, sb


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` for float64 CuPy arrays (NumPy's rules for 1-D operands and for broadcasting
    the leading batch axes), by one strided batched cuBLAS product."""
    import cupy

    a = a if a.dtype == cupy.float64 else a.astype(cupy.float64)
    b = b if b.dtype == cupy.float64 else b.astype(cupy.float64)
    va, vb = a.ndim == 1, b.ndim == 1
    A = a[None, :] if va else a
    Bm = b[:, None] if vb else b
    m, k = A.shape[-2:]
    k2, n = Bm.shape[-2:]
    if k != k2:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align")
    ba, bb = A.shape[:-2], Bm.shape[:-2]
    if ba and bb and ba != bb:  # NumPy's broadcasting of the batch axes (stride-0 views)
        try:
            batch = cupy.broadcast_shapes(ba, bb)
        except ValueError:
            raise ValueError(f"matmul: batch shapes {ba} and {bb} do not broadcast") from None
        A, Bm = cupy.broadcast_to(A, (*batch, m, k)), cupy.broadcast_to(Bm, (*batch, k, n))
        ba = bb = batch
    batch = ba or bb
    nb = math.prod(batch)
    out = cupy.empty((*batch, m, n), dtype=cupy.float64)
    if out.size and k == 0:
        out.fill(0)
    elif out.size:
        A = A.reshape(-1, m, k) if len(ba) > 1 else A
        Bm = Bm.reshape(-1, k, n) if len(bb) > 1 else Bm
        xa, ra, lda, sa = _as_batched(A)
        xb, rb, ldb, sbb = _as_batched(Bm)
        # row-major C (m x n) is column-major C^T (n x m) = B^T A^T
        lib, h = _cublas()
        _check(
            lib.cublasDgemmStridedBatched(
                h,
                _int(OP_N if rb else OP_T),
                _int(OP_N if ra else OP_T),
                _int(n),
                _int(m),
                _int(k),
                ctypes.byref(_ONE),
                _ptr(xb.data.ptr),
                _int(ldb),
                ctypes.c_longlong(sbb),
                _ptr(xa.data.ptr),
                _int(lda),
                ctypes.c_longlong(sa),
                ctypes.byref(_ZERO),
                _ptr(out.data.ptr),
                _int(n),
                ctypes.c_longlong(m * n),
                _int(nb),
            ),
            "cublasDgemmStridedBatched",
        )
    if va and vb:
        return out[..., 0, 0]
    if va:
        return out[..., 0, :]
    if vb:
        return out[..., 0]
    return out


def _pointers(x: Any) -> Any:
    """Device array of the addresses of the matrices of a C-contiguous stack (B, n, n)."""
    import cupy

    B = x.shape[0]
    step = x.strides[0] if B > 1 else max(x.nbytes, 1)  # a length-1 axis may have stride 0
    return cupy.arange(x.data.ptr, x.data.ptr + step * B, step, dtype=cupy.uintp)


def potrf_batched(x: Any) -> Any:
    """Factor a C-contiguous float64 stack x (B, n, n) in place: afterwards its row-major
    LOWER triangles hold the Cholesky factors (the upper triangles are left as they were).
    Returns cuSOLVER's status per matrix (B,) on the device, 0 where the factorisation
    succeeded."""
    import cupy

    B, n = x.shape[0], x.shape[-1]
    status = cupy.zeros(B, dtype=cupy.int32)
    if B == 0 or n == 0:
        return status
    ptrs = _pointers(x)
    lib, h = _cusolver()
    # column-major UPPER of a row-major matrix is its row-major LOWER triangle
    _check(
        lib.cusolverDnDpotrfBatched(
            h,
            _int(FILL_UPPER),
            _int(n),
            _ptr(ptrs.data.ptr),
            _int(n),
            _ptr(status.data.ptr),
            _int(B),
        ),
        "cusolverDnDpotrfBatched",
    )
    return status


def trsm(L: Any, b: Any, trans: int) -> Any:
    """Solve L x = b (trans 0) or L^T x = b (trans 1) for lower-triangular, C-contiguous L:
    one matrix (n, n) with b (r, n) (r right-hand sides as rows), or a stack (B, n, n) with
    b (B, n) (one right-hand side each). Returns x, shaped like b."""
    import cupy

    n = L.shape[-1]
    x = cupy.array(b, dtype=cupy.float64, order="C", copy=True)
    if x.size == 0 or n == 0:
        return x
    # row-major lower L is column-major upper U = L^T: L x = b  <=>  U^T x = b
    op = OP_T if trans == 0 else OP_N
    lib, h = _cublas()
    if L.ndim == 2:
        r = x.size // n
        # rows of x (r, n) row-major = columns of a column-major n x r matrix, ld n
        _check(
            lib.cublasDtrsm_v2(
                h,
                _int(SIDE_LEFT),
                _int(FILL_UPPER),
                _int(op),
                _int(DIAG_NON_UNIT),
                _int(n),
                _int(r),
                ctypes.byref(_ONE),
                _ptr(L.data.ptr),
                _int(n),
                _ptr(x.data.ptr),
                _int(n),
            ),
            "cublasDtrsm",
        )
        return x
    B = L.shape[0]
    # both pointer arrays held until the call is queued (a freed one could be reused at once)
    ptr_L, ptr_x = _pointers(L), _pointers(x.reshape(B, n, 1))
    _check(
        lib.cublasDtrsmBatched(
            h,
            _int(SIDE_LEFT),
            _int(FILL_UPPER),
            _int(op),
            _int(DIAG_NON_UNIT),
            _int(n),
            _int(1),
            ctypes.byref(_ONE),
            _ptr(ptr_L.data.ptr),
            _int(n),
            _ptr(ptr_x.data.ptr),
            _int(n),
            _int(B),
        ),
        "cublasDtrsmBatched",
    )
    return x
