"""Fused CUDA kernels of the hot path on CuPy (issue 15, item 1).

Imported only from CuPy code paths (it imports CuPy at its top): the NumPy path never loads it.

``topk_learn`` is FedNL's top-K Hessian learning (:func:`fedtheory.kernels.topk_learn`, the
Numba kernel of the NumPy path, with its semantics) as ONE kernel launch, one thread block per
client, with no host synchronisation:

1. the upper-triangle difference D = T[k] - H[r] (d(d+1)/2 entries, row-major) is written to a
   scratch buffer, its Frobenius norm (an off-diagonal entry counts twice) reduced if asked,
   and the histogram of the top 11 bits of the magnitudes' bit patterns counted;
2. the K-th largest magnitude is found by a radix select over the IEEE bit patterns of |D_ij|
   (non-negative doubles order like their bit patterns as unsigned integers; a NaN counts as
   +inf): digits of 11, 11, 11, 11, 11 and 8 bits from the top, one shared-memory histogram
   of the entries that match the digits chosen so far per pass. It stops early once the bin
   holding the K-th largest holds exactly the entries still to be taken (then all of them
   are taken and no tie is split), and after the first pass when that bin holds only exact
   zeros (the K-th largest is 0: on the w8a split with K = 8d, a third to a half of the
   clients' differences have fewer than K non-zeros);
3. one pass adds the selected entries (and their mirrors) to H[r]: every entry above the K-th
   largest, and of the entries equal to it the LAST ones in row-major order (the first
   ``equal - (K - greater)`` are skipped, counted by a block-wide prefix sum in position
   order); then the Frobenius norm of the residual if asked.

Each entry of H gets one addition, the same one the Numba kernel makes (the products and sums
are rounded one by one: no fused multiply-add), so H is bit-identical to the NumPy path; the
norms are block reductions and agree with the NumPy path to rounding. Rows must be distinct (a
FedNL round's participants are): blocks of the same slot would race.
"""

from __future__ import annotations

import functools
from typing import Any

import cupy
import numpy as np

#: Threads per block (a multiple of 32, at most 1024) and entries each thread loads per step.
THREADS = 512
UNROLL = 4
#: Blocks per multiprocessor the register budget leaves room for (w8a: 142 clients, 132 SMs).
MIN_BLOCKS = 2

_SOURCE = r"""
typedef unsigned long long u64;
typedef long long i64;

#define FULL_MASK 0xffffffffu
#define NO_DIGIT 0xffffffffu
#define INF_BITS 0x7ff0000000000000ULL
#define TOP_BINS 2048

/* |v| as its IEEE bit pattern: non-negative doubles order like these integers; NaN: +inf. */
__device__ __forceinline__ u64 mag_key(double v) {
    return v != v ? INF_BITS : ((u64)__double_as_longlong(v) & 0x7fffffffffffffffULL);
}

/* Position of entry (i, i) in the row-major upper triangle of a d x d matrix. */
__device__ __forceinline__ i64 row_start(i64 i, i64 d) { return i * d - i * (i - 1) / 2; }

/* The row of position t of the row-major upper triangle (from the quadratic, then exact). */
__device__ __forceinline__ int tri_row(i64 t, int d) {
    const double b = 2.0 * d + 1.0;
    const double disc = b * b - 8.0 * (double)t;
    int i = (int)((b - sqrt(disc > 0.0 ? disc : 0.0)) * 0.5);
    if (i < 0) i = 0;
    if (i > d - 1) i = d - 1;
    while (i > 0 && row_start(i, d) > t) --i;
    while (i < d - 1 && row_start(i + 1, d) <= t) ++i;
    return i;
}

/* Adds the warp's digits to hist (NO_DIGIT: this lane counts nothing), one shared atomic per
   distinct digit: at once when the warp's entries share one digit (the many equal magnitudes
   of sparse data), else by matching lanes. Every lane of the warp calls it. */
__device__ __forceinline__ void count_digit(unsigned* hist, unsigned digit, int lane) {
    const unsigned want = __ballot_sync(FULL_MASK, digit != NO_DIGIT);
    if (want == 0u) return;
    const int first = __ffs(want) - 1;
    const unsigned d0 = __shfl_sync(FULL_MASK, digit, first);
    if (__all_sync(FULL_MASK, digit == NO_DIGIT || digit == d0)) {
        if (lane == first) atomicAdd(&hist[d0], __popc(want));
        return;
    }
    const unsigned peers = __match_any_sync(FULL_MASK, digit);
    if (digit != NO_DIGIT && lane == __ffs(peers) - 1) atomicAdd(&hist[digit], __popc(peers));
}

__device__ __forceinline__ unsigned warp_inclusive_scan(unsigned x, int lane) {
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned y = __shfl_up_sync(FULL_MASK, x, o);
        if (lane >= o) x += y;
    }
    return x;
}

/* Exclusive prefix sum of x over the block in thread order; *total: the block's sum. Every
   thread of the block calls it. */
__device__ unsigned block_exclusive_scan(unsigned x, unsigned* ws, unsigned* total) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const unsigned inc = warp_inclusive_scan(x, lane);
    if (lane == 31) ws[w] = inc;
    __syncthreads();
    if (w == 0) {
        unsigned s = lane < nw ? ws[lane] : 0u;
        s = warp_inclusive_scan(s, lane);
        if (lane < nw) ws[lane] = s;
    }
    __syncthreads();
    const unsigned before = w > 0 ? ws[w - 1] : 0u;
    *total = ws[nw - 1];
    __syncthreads();
    return before + inc - x;
}

/* Sum of x over the block, in a fixed order; valid in thread 0. Every thread calls it. */
__device__ double block_sum(double x, double* ws) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) x = __dadd_rn(x, __shfl_down_sync(FULL_MASK, x, o));
    if (lane == 0) ws[w] = x;
    __syncthreads();
    double s = 0.0;
    if (w == 0) {
        s = lane < nw ? ws[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) s = __dadd_rn(s, __shfl_down_sync(FULL_MASK, s, o));
    }
    __syncthreads();
    return s;
}

/* The bin of hist[0 : nbins] that holds the need-th largest entry (counting from the top):
   its index, the count of the bins above it and its own count, to the shared *out[0:3]. Each
   thread sums a run of bins, the runs in decreasing bin order, so that an exclusive scan in
   thread order gives the count above each run. Every thread calls it. */
__device__ void find_bin(const unsigned* hist, int nbins, i64 need, unsigned* ws,
                         unsigned* out) {
    const int nt = blockDim.x, tid = threadIdx.x;
    const int per = (nbins + nt - 1) / nt;
    int hi = nbins - tid * per, lo = hi - per;
    if (hi < 0) hi = 0;
    if (lo < 0) lo = 0;
    unsigned local = 0;
    for (int c = lo; c < hi; ++c) local += hist[c];
    unsigned total;
    unsigned above = block_exclusive_scan(local, ws, &total);
    for (int c = hi - 1; c >= lo; --c) {
        const unsigned h = hist[c];
        if ((i64)above < need && (i64)above + (i64)h >= need) {
            out[0] = (unsigned)c;
            out[1] = above;
            out[2] = h;
        }
        above += h;
    }
    __syncthreads();
}

extern "C" __global__ void __launch_bounds__(FEDNL_NT, FEDNL_MIN_BLOCKS)
fednl_topk_learn(double* __restrict__ H, const double* __restrict__ T,
                 const i64* __restrict__ rows, const int identity, const int d, const i64 K,
                 const double alpha, const int alpha_one, const int norm_kind,
                 double* __restrict__ norms, double* __restrict__ scratch) {
    __shared__ unsigned hist[TOP_BINS];
    __shared__ unsigned uws[32];
    __shared__ double dws[32];
    __shared__ unsigned found[3];
    __shared__ unsigned zeros;

    const int tid = threadIdx.x, lane = tid & 31, nt = blockDim.x;
    const i64 k = blockIdx.x;
    const i64 r = identity ? k : rows[k];
    const i64 dd = (i64)d * d, tri = (i64)d * (d + 1) / 2;
    double* Hr = H + r * dd;
    const double* Tk = T + k * dd;
    double* vals = scratch + k * tri;
    /* Steps of the loops over the triangle: position (s + u) * nt + tid, the same count of
       steps in every thread (the warp-wide calls need every lane). */
    const i64 steps = (tri + nt - 1) / nt;

    for (int b = tid; b < TOP_BINS; b += nt) hist[b] = 0u;
    if (tid == 0) zeros = 0u;
    __syncthreads();

    /* 1. the difference, its norm (norm_kind 1) and the histogram of the top 11 bits. */
    double acc = 0.0;
    for (i64 s = 0; s < steps; s += FEDNL_UNROLL) {
        double v[FEDNL_UNROLL];
        int ii[FEDNL_UNROLL], jj[FEDNL_UNROLL];
#pragma unroll
        for (int u = 0; u < FEDNL_UNROLL; ++u) {
            const i64 t = (s + u) * nt + tid;
            ii[u] = -1;
            if (t < tri) {
                const int i = tri_row(t, d);
                ii[u] = i;
                jj[u] = i + (int)(t - row_start(i, d));
            }
        }
#pragma unroll
        for (int u = 0; u < FEDNL_UNROLL; ++u) {
            if (ii[u] >= 0) {
                const i64 at = (i64)ii[u] * d + jj[u];
                v[u] = Tk[at] - Hr[at];
            }
        }
#pragma unroll
        for (int u = 0; u < FEDNL_UNROLL; ++u) {
            unsigned digit = NO_DIGIT;
            if (ii[u] >= 0) {
                vals[(s + u) * nt + tid] = v[u];
                if (norm_kind == 1) {
                    const double sq = __dmul_rn(v[u], v[u]);
                    acc = __dadd_rn(acc, ii[u] == jj[u] ? sq : __dmul_rn(2.0, sq));
                }
                digit = (unsigned)(mag_key(v[u]) >> 52);
            }
            count_digit(hist, digit, lane);
            const unsigned z = __ballot_sync(FULL_MASK, digit != NO_DIGIT && v[u] == 0.0);
            if (lane == 0 && z != 0u) atomicAdd(&zeros, __popc(z));
        }
    }
    if (norm_kind == 1) {
        const double total = block_sum(acc, dws);
        if (tid == 0) norms[k] = sqrt(total);
    }
    __syncthreads();

    /* 2. the K-th largest magnitude: entries with key > lo are taken, and of those with
       key == lo all but the first `skip` in position order. */
    i64 need = K < tri ? K : tri;
    u64 lo = 0ULL;
    i64 skip = 0;
    if (need < tri) {
        u64 prefix = 0ULL;
        int shift = 52, width = 11;
        for (int pass = 0;; ++pass) {
            const int high = shift + width;
            if (pass > 0) {
                for (int b = tid; b < TOP_BINS; b += nt) hist[b] = 0u;
                __syncthreads();
                const u64 dmask = (1ULL << width) - 1ULL;
                for (i64 s = 0; s < steps; s += FEDNL_UNROLL) {
                    double v[FEDNL_UNROLL];
#pragma unroll
                    for (int u = 0; u < FEDNL_UNROLL; ++u) {
                        const i64 t = (s + u) * nt + tid;
                        v[u] = t < tri ? vals[t] : 0.0;
                    }
#pragma unroll
                    for (int u = 0; u < FEDNL_UNROLL; ++u) {
                        const i64 t = (s + u) * nt + tid;
                        unsigned digit = NO_DIGIT;
                        const u64 key = mag_key(v[u]);
                        if (t < tri && ((key ^ prefix) >> high) == 0ULL)
                            digit = (unsigned)((key >> shift) & dmask);
                        count_digit(hist, digit, lane);
                    }
                }
                __syncthreads();
            }
            find_bin(hist, 1 << width, need, uws, found);
            const unsigned bin = found[0], above = found[1], count = found[2];
            prefix |= (u64)bin << shift;
            need -= (i64)above;
            if ((i64)count == need) {  /* the whole bin is taken: no tie to split */
                lo = prefix;
                break;
            }
            if (shift == 0 || (pass == 0 && bin == 0u && count == zeros)) {
                /* lo is the K-th largest itself (after the last digit; or 0 when the bin of
                   the smallest exponent holds only zeros, the ties of sparse data) */
                lo = prefix;
                skip = (i64)count - need;
                break;
            }
            width = shift < 11 ? shift : 11;
            shift -= width;
            __syncthreads();
        }
    }
    __syncthreads();

    /* 3. the additions at the selected entries and mirrors; the residual's norm (kind 2). */
    double acc2 = 0.0;
    i64 ties = 0;  /* entries equal to lo at earlier positions */
    for (i64 s = 0; s < steps; s += FEDNL_UNROLL) {
        double v[FEDNL_UNROLL];
#pragma unroll
        for (int u = 0; u < FEDNL_UNROLL; ++u) {
            const i64 t = (s + u) * nt + tid;
            v[u] = t < tri ? vals[t] : 0.0;
        }
#pragma unroll
        for (int u = 0; u < FEDNL_UNROLL; ++u) {
            const i64 t = (s + u) * nt + tid;
            const bool ok = t < tri;
            const u64 key = mag_key(v[u]);
            const bool tie = ok && key == lo;
            bool take = ok && key > lo;
            if (skip > 0) {
                unsigned total;
                const unsigned before = block_exclusive_scan(tie ? 1u : 0u, uws, &total);
                take = take || (tie && ties + (i64)before >= skip);
                ties += (i64)total;
            } else {
                take = take || tie;
            }
            if (ok && (take || norm_kind == 2)) {
                const int i = tri_row(t, d);
                const int j = i + (int)(t - row_start(i, d));
                double res = v[u];
                if (take) {
                    const double a = alpha_one ? v[u] : __dmul_rn(alpha, v[u]);
                    const i64 at = (i64)i * d + j;
                    Hr[at] = __dadd_rn(Hr[at], a);
                    if (i != j) {
                        const i64 ta = (i64)j * d + i;
                        Hr[ta] = __dadd_rn(Hr[ta], a);
                    }
                    res = __dsub_rn(v[u], a);
                }
                if (norm_kind == 2) {
                    const double sq = __dmul_rn(res, res);
                    acc2 = __dadd_rn(acc2, i == j ? sq : __dmul_rn(2.0, sq));
                }
            }
        }
    }
    if (norm_kind == 2) {
        const double total = block_sum(acc2, dws);
        if (tid == 0) norms[k] = sqrt(total);
    }
}
"""


@functools.cache
def _kernel(threads: int, unroll: int, min_blocks: int) -> Any:
    """The kernel for a launch shape (compiled by CuPy on first use, cached on disk)."""
    return cupy.RawKernel(
        _SOURCE,
        "fednl_topk_learn",
        options=(
            "--fmad=false",
            f"-DFEDNL_NT={threads}",
            f"-DFEDNL_MIN_BLOCKS={min_blocks}",
            f"-DFEDNL_UNROLL={unroll}",
        ),
    )


def _float64_stack(x: Any, name: str) -> None:
    if not isinstance(x, cupy.ndarray) or x.dtype != cupy.float64 or not x.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous float64 CuPy array")


def topk_learn(H: Any, T: Any, rows: Any, K: int, alpha: float, norm_kind: int, norms: Any) -> None:
    """FedNL's top-K learning on the GPU, in place, as :func:`fedtheory.kernels.topk_learn`
    (whose semantics it has): for k < m, client slot r = rows[k] of the stack H (N, d, d) gets
    H[r] += alpha C(T[k] - H[r]), C = the K entries of largest magnitude of the upper
    triangle (diagonal included), mirrored, exact ties going to the larger (i, j) in row-major
    order, a NaN counting as the largest magnitude; ``alpha`` = 1 adds the values themselves.
    ``rows``: distinct device indices (m,) int64, or None for 0..m-1. ``norm_kind``: 0 none,
    1 / 2 the Frobenius norm of the difference before / after the update, written to
    ``norms`` (m,) float64 (None with kind 0). One kernel launch, no host synchronisation.
    """
    if norm_kind not in (0, 1, 2):
        raise ValueError(
            f"norm_kind must be 0, 1 or 2 on the GPU (no spectral norm), got {norm_kind!r}"
        )
    _float64_stack(H, "H")
    _float64_stack(T, "T")
    if H.ndim != 3 or T.ndim != 3 or H.shape[1:] != T.shape[1:] or H.shape[1] != H.shape[2]:
        raise ValueError(f"H (N, d, d) and T (m, d, d) do not match: {H.shape}, {T.shape}")
    m, d = T.shape[0], T.shape[1]
    tri = d * (d + 1) // 2
    if tri >= 2**31:
        raise ValueError(f"d = {d} is too large for the top-K kernel")
    identity = rows is None
    if identity:
        if m > H.shape[0]:
            raise ValueError(f"{m} clients but only {H.shape[0]} learned Hessians")
        rows = cupy.empty(0, dtype=cupy.int64)
    elif not (
        isinstance(rows, cupy.ndarray)
        and rows.dtype == cupy.int64
        and rows.shape == (m,)
        and rows.flags.c_contiguous
    ):
        raise ValueError(f"rows must be a CuPy int64 array of shape ({m},)")
    if norm_kind:
        if not (
            isinstance(norms, cupy.ndarray)
            and norms.dtype == cupy.float64
            and norms.shape == (m,)
            and norms.flags.c_contiguous
        ):
            raise ValueError(f"norms must be a CuPy float64 array of shape ({m},)")
    else:
        norms = cupy.empty(0, dtype=cupy.float64)
    if K < 1:
        raise ValueError(f"K must be at least 1, got {K}")
    if m == 0 or d == 0:
        return
    scratch = cupy.empty(m * tri, dtype=cupy.float64)
    _kernel(THREADS, UNROLL, MIN_BLOCKS)(
        (m,),
        (THREADS,),
        (
            H,
            T,
            rows,
            np.int32(identity),
            np.int32(d),
            np.int64(min(K, tri)),
            np.float64(alpha),
            np.int32(alpha == 1.0),
            np.int32(norm_kind),
            norms,
            scratch,
        ),
    )


# --------------------------------------------------------------- batched SPD solve, one launch
_CHOL_SOURCE = r"""
/* x_m = P_m^{-1} b_m for a stack of symmetric positive definite matrices P (B, n, n),
   row-major (the UPPER triangle is read), one thread block per matrix, in shared memory.

   The upper triangle U (packed by rows, n (n + 1) / 2 doubles) and b are copied to shared
   memory. Gaussian elimination without pivoting, b carried along, the pivot rows left
   unscaled:

       for k:  U[r][c] -= (U[k][r] / U[k][k]) U[k][c]  (k < r <= c),
               y[r]    -= (U[k][r] / U[k][k]) y[k]

   For an SPD matrix this is P = L D L^T (L unit lower, U[k][c] = D_k L[c][k], y = D L^T x),
   so one back substitution remains, x_k = (y_k - sum_{c > k} U[k][c] x_c) / U[k][k].

   The steps are sequential, so the kernel is built for latency. Panels of NB rows: one warp
   eliminates a panel in registers (lane l holds columns l, l + 32, ..., G of them; the pivots
   and multipliers move by shuffles, no barrier); the other rows get the panel's NB updates at
   once, by warp tiles of TILE rows x 32 TILE columns (a TILE x TILE register tile per
   thread). With look-ahead: once panel p is eliminated, every warp first updates the NEXT
   panel's rows with it; then the first warp eliminates that next panel while the other warps
   update the remaining rows with panel p (two barriers per panel). The back substitution goes
   by blocks of 32 rows from the bottom: the rows' products with the solved part one warp per
   row, the 32 x 32 triangle by the first warp in registers. The pivots' reciprocals are kept
   (inv).

   At least two warps per block: the first eliminates the next panel while the others update
   the remaining rows (with one warp those rows would miss the panel's update).

   A pivot U[k][k] that is not positive (or NaN) is where LAPACK's potrf stops:
   status[m] = k + 1 and x_m is not written; else status[m] = 0.
   Compiled per G = ceil(n / 32) (-DG=...), at most MAXT threads per block (-DMAXT=...). */
#define NB 8
#define TILE 4
#define FULL 0xffffffffu

__device__ __forceinline__ double* packed_row(double* U, int r, int n) {
    return U + (r * n - r * (r + 1) / 2);  /* [c] = U[r][c], c >= r (n <= 238: no overflow) */
}

/* v[g] for a g known only at run time, without indexing a register array dynamically. */
__device__ __forceinline__ double pick(const double (&v)[G], int g) {
    double out = 0.0;
#pragma unroll
    for (int h = 0; h < G; ++h)
        if (h == g) out = v[h];
    return out;
}

/* One warp eliminates rows k0..k1-1 (they have every earlier panel's updates): returns the
   1-based index of a pivot that is not positive, or 0. */
__device__ int eliminate_panel(double* U, double* y, double* inv, int n, int k0, int k1,
                               int lane) {
    double R[NB][G];
#pragma unroll
    for (int rr = 0; rr < NB; ++rr) {
        const int r = k0 + rr;
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const int c = 32 * g + lane;
            R[rr][g] = r < k1 && c >= r && c < n ? packed_row(U, r, n)[c] : 0.0;
        }
    }
    double yl = lane < k1 - k0 ? y[k0 + lane] : 0.0;  /* y of row k0 + lane */
    int bad = 0;
#pragma unroll
    for (int kk = 0; kk < NB; ++kk) {  /* unrolled whole: R is never indexed at run time */
        const int k = k0 + kk;
        /* row k at the panel's columns (a panel lies in one group of 32) */
        const double rk_panel = pick(R[kk], k0 >> 5);
        const double akk = __shfl_sync(FULL, rk_panel, k & 31);
        if (k < k1 && bad == 0 && !(akk > 0.0)) bad = k + 1;  /* the same in every lane */
        if (k >= k1 || bad != 0) continue;
        const double s = 1.0 / akk;
        const double yk = __shfl_sync(FULL, yl, kk) * s;
        const double ml = __shfl_sync(FULL, rk_panel, (k0 + lane) & 31);  /* U[k][k0 + l] */
        if (lane > kk && lane < k1 - k0) yl -= ml * yk;
#pragma unroll
        for (int rr = kk + 1; rr < NB; ++rr) {
            const double f = __shfl_sync(FULL, rk_panel, (k0 + rr) & 31) * s;
            /* every column: those left of the diagonal hold garbage, never read (multipliers
               come from columns > k) nor stored */
#pragma unroll
            for (int g = 0; g < G; ++g) R[rr][g] -= f * R[kk][g];
        }
        if (lane == 0) inv[k] = s;
    }
#pragma unroll
    for (int rr = 0; rr < NB; ++rr) {
        const int r = k0 + rr;
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const int c = 32 * g + lane;
            if (r < k1 && c >= r && c < n) packed_row(U, r, n)[c] = R[rr][g];
        }
    }
    if (lane < k1 - k0) y[k0 + lane] = yl;
    return bad;
}

/* Rows lo..hi-1 (all their columns c >= r) and their y get the updates of the eliminated
   FULL panel k0..k0+NB-1 (its loops unrolled), by warps w0, w0 + stride, ... (warp: this
   warp's index). */
__device__ void update_rows(double* U, double* y, const double* inv, int n, int k0, int lo,
                            int hi, int warp, int w0, int stride, int lane) {
    const int RT = (hi - lo + TILE - 1) / TILE, CT = (n - lo + 32 * TILE - 1) / (32 * TILE);
    for (int wt = warp - w0; wt < RT * CT; wt += stride) {
        /* a warp tile: rows r0..r0+TILE-1 (the same for the warp: their multipliers are
           broadcast), columns cb + lane + 32 j (consecutive lanes, no bank conflict) */
        const int ti = wt / CT, r0 = lo + ti * TILE, cb = lo + (wt - ti * CT) * 32 * TILE;
        if (cb + 32 * TILE - 1 < r0) continue;  /* wholly below the diagonal */
        double acc[TILE][TILE];
#pragma unroll
        for (int i = 0; i < TILE; ++i)
#pragma unroll
            for (int j = 0; j < TILE; ++j) acc[i][j] = 0.0;
#pragma unroll
        for (int kk = 0; kk < NB; ++kk) {  /* a full panel: unrolled, its loads in flight */
            const int k = k0 + kk;
            const double* rk = packed_row(U, k, n);
            const double s = inv[k];
            double a[TILE], bb[TILE];
#pragma unroll
            for (int i = 0; i < TILE; ++i) {
                a[i] = r0 + i < hi ? rk[r0 + i] * s : 0.0;
                const int c = cb + lane + 32 * i;
                bb[i] = c < n ? rk[c] : 0.0;
            }
#pragma unroll
            for (int i = 0; i < TILE; ++i)
#pragma unroll
                for (int j = 0; j < TILE; ++j) acc[i][j] += a[i] * bb[j];
        }
#pragma unroll
        for (int i = 0; i < TILE; ++i) {
            const int r = r0 + i;
            if (r >= hi) break;
            double* row = packed_row(U, r, n);
#pragma unroll
            for (int j = 0; j < TILE; ++j) {
                const int c = cb + lane + 32 * j;
                if (c >= r && c < n) row[c] -= acc[i][j];
            }
        }
    }
    for (int r = lo + 32 * (warp - w0) + lane; r < hi; r += 32 * stride) {
        double s = 0.0;
#pragma unroll
        for (int k = k0; k < k0 + NB; ++k) s += packed_row(U, k, n)[r] * inv[k] * y[k];
        y[r] -= s;
    }
}

extern "C" __global__ void __launch_bounds__(MAXT) chol_solve(const double* __restrict__ P,
                                                              const double* __restrict__ b,
                                                              double* __restrict__ x,
                                                              int* __restrict__ status,
                                                              const int n) {
    extern __shared__ double U[];  /* packed upper triangle, y (n), inv (n), a status */
    double* y = U + n * (n + 1) / 2;
    double* inv = y + n;
    int& bad_s = *(int*)(inv + n);
    const int m = blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
    const int lane = tid & 31, warp = tid >> 5, nwarps = nt >> 5;
    const double* Pm = P + (long long)m * n * n;
    const int nn = n * n;
    for (int base = tid; base < nn; base += 4 * nt) {  /* four loads in flight per thread */
        double v[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) v[u] = base + u * nt < nn ? Pm[base + u * nt] : 0.0;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int t = base + u * nt, r = t / n, c = t - r * n;
            if (t < nn && c >= r) packed_row(U, r, n)[c] = v[u];
        }
    }
    for (int i = tid; i < n; i += nt) y[i] = b[(long long)m * n + i];
    __syncthreads();
    if (warp == 0) {
        const int bad = eliminate_panel(U, y, inv, n, 0, min(NB, n), lane);
        if (lane == 0) bad_s = bad;
    }
    __syncthreads();
    for (int k0 = 0; !bad_s && k0 + NB < n; k0 += NB) {  /* bad_s: read after a barrier */
        const int k1 = k0 + NB, k2 = min(k1 + NB, n);
        /* the next panel's rows first, by every warp */
        update_rows(U, y, inv, n, k0, k1, k2, warp, 0, nwarps, lane);
        __syncthreads();
        if (warp == 0) {  /* look-ahead: the next panel while the others update the rest */
            const int bad = eliminate_panel(U, y, inv, n, k1, k2, lane);
            if (lane == 0 && bad) bad_s = bad;
        } else if (k2 < n) {
            update_rows(U, y, inv, n, k0, k2, n, warp, 1, nwarps - 1, lane);
        }
        __syncthreads();
    }
    const int bad = bad_s;
    if (tid == 0) status[m] = bad;
    if (bad) return;
    /* back substitution, 32 rows at a time from the bottom; y[c] becomes x_c */
    for (int j1 = n; j1 > 0; j1 -= 32) {
        const int j0 = max(j1 - 32, 0), len = j1 - j0;
        if (j1 < n) {
            for (int r = j0 + warp; r < j1; r += nwarps) {
                const double* row = packed_row(U, r, n);
                double s = 0.0;
                for (int c = j1 + lane; c < n; c += 32) s += row[c] * y[c];
                for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(FULL, s, o);
                if (lane == 0) y[r] -= s;
            }
            __syncthreads();
        }
        if (warp == 0) {
            double yl = lane < len ? y[j0 + lane] : 0.0;
            for (int k = len - 1; k >= 0; --k) {
                const double xk = __shfl_sync(FULL, yl, k) * inv[j0 + k];
                if (lane == k) yl = xk;
                else if (lane < k) yl -= packed_row(U, j0 + lane, n)[j0 + k] * xk;
            }
            if (lane < len) y[j0 + lane] = yl;
        }
        __syncthreads();
    }
    for (int i = tid; i < n; i += nt) x[(long long)m * n + i] = y[i];
}
"""
#: Rows per panel of :data:`_CHOL_SOURCE` (its ``NB``).
CHOL_PANEL = 8


#: Most threads per block of :func:`chol_solve` (a multiple of 32); a small matrix gets
#: fewer (:func:`_chol_threads`), so that more of its blocks share a multiprocessor.
CHOL_THREADS = 512


def _chol_threads(n: int) -> int:
    """Threads for an n x n matrix: a warp per warp tile (4 rows x 128 columns) of the first
    trailing update (the largest), between 64 (the kernel needs two warps at least) and the
    kernel's most."""
    T = max(n - CHOL_PANEL, 1)
    warps = -(-T // 4) * -(-T // 128)
    return max(64, min(_chol_max_threads(_chol_groups(n)), 32 * warps))


def _chol_groups(n: int) -> int:
    """Columns per lane of the panel warp, G = ceil(n / 32)."""
    return max(1, -(-n // 32))


def _chol_max_threads(groups: int) -> int:
    """The most threads per block the kernel of ``groups`` columns per lane is built for, so
    that its panel registers (8 x G doubles) are not spilled: 512 up to G = 2, 384 up to
    G = 4, 256 above (n = 123: 154k cycles at 384 threads, 164k at 512 with spills, 156k
    at 256; H200)."""
    most = 512 if groups <= 2 else 384 if groups <= 4 else 256
    return min(CHOL_THREADS, most)


@functools.cache
def _chol_kernel(device: int, groups: int, max_threads: int) -> Any:
    """The solve kernel for ``groups`` columns per lane and at most ``max_threads`` threads per
    block, its dynamic shared memory allowed up
    to the device's opt-in limit ONCE: CuPy shares one compiled function among kernels of the
    same source and options, so the attribute must not be lowered for a smaller matrix after a
    larger one was launched."""
    options = (f"-DG={groups}", f"-DMAXT={max_threads}")
    kernel = cupy.RawKernel(_CHOL_SOURCE, "chol_solve", options=options)
    kernel.max_dynamic_shared_size_bytes = _shared_limit(device)
    return kernel


@functools.cache
def _shared_limit(device: int) -> int:
    return int(cupy.cuda.Device(device).attributes["MaxSharedMemoryPerBlockOptin"])


def _chol_smem(n: int) -> int:
    return (n * (n + 1) // 2 + 2 * n + 1) * 8


def chol_solve_fits(n: int) -> bool:
    """Whether the packed upper triangle of an n x n matrix and its right-hand side fit one
    block's shared memory (n <= 238 on an H100 / H200, 227 KiB)."""
    return 0 < n and _chol_smem(n) <= _shared_limit(cupy.cuda.Device().id)


def chol_solve(P: Any, b: Any, kind: str | None = None) -> tuple[Any, Any]:
    """x_m = P_m^{-1} b_m for every matrix of a C-contiguous float64 stack P (B, n, n) (its
    upper triangle is read) and b (B, n), in ONE kernel launch: returns (x, status), status
    (B,) int32 on the device, 0 where the factorisation succeeded, else the 1-based index of
    the failed pivot (x undefined there). Needs :func:`chol_solve_fits`.

    ``kind``: "block" (one thread block per matrix, :data:`_CHOL_SOURCE`), "warp" (one warp
    per matrix, :data:`_CHOL_WARP_SOURCE`, n <= :data:`CHOL_WARP_MAX` where its blocks fit
    shared memory) or None: the warp kernel where it applies, else the block kernel
    (64,000 matrices of n = 50: 16.9 ms as blocks, 2.9 ms as warps, H200; BENCHMARKS.md,
    "Seventh session")."""
    _float64_stack(P, "P")
    if P.ndim != 3 or P.shape[1] != P.shape[2] or b.shape != P.shape[:2]:
        raise ValueError(f"P (B, n, n) and b (B, n) do not match: {P.shape}, {b.shape}")
    B, n = P.shape[0], P.shape[-1]
    if not chol_solve_fits(n) and n:
        raise ValueError(f"n = {n} does not fit one block's shared memory")
    b = cupy.ascontiguousarray(b, dtype=cupy.float64)
    x = cupy.empty((B, n), dtype=cupy.float64)
    status = cupy.zeros(B, dtype=cupy.int32)
    if B == 0 or n == 0:
        return x, status
    if kind is None:
        kind = "warp" if _chol_warp_fits(n) else "block"
    if kind == "warp":
        if not _chol_warp_fits(n):
            raise ValueError(
                f"the warp kernel solves n <= {CHOL_WARP_MAX} whose {CHOL_WARPS} matrices per "
                f"block fit shared memory, got n = {n}"
            )
        _chol_solve_warp(P, b, x, status)
        return x, status
    if kind != "block":
        raise ValueError(f"kind must be None, 'warp' or 'block', got {kind!r}")
    groups = _chol_groups(n)
    kernel = _chol_kernel(cupy.cuda.Device().id, groups, _chol_max_threads(groups))
    threads = _chol_threads(n)
    kernel((B,), (threads,), (P, b, x, status, np.int32(n)), shared_mem=_chol_smem(n))
    return x, status


# ------------------------------------------------- batched SPD solve, one warp per small matrix
_CHOL_WARP_SOURCE = r"""
/* The same solve as chol_solve (the same elimination: no pivoting, pivot rows unscaled, b
   carried along, one back substitution; the same status) for stacks of SMALL matrices,
   n <= 32 G: one WARP per matrix, WARPS matrices per block, no block barrier.

   A block kernel spends most of a small matrix's time in barriers and idle threads (n = 50:
   64,000 matrices took 16.9 ms, H200). Here each warp holds its matrix's packed upper
   triangle in its own part of shared memory and its right-hand side in registers (lane l
   holds rows l, l + 32, ...); the lanes own the columns c = l + 32 g. Panels of NB pivots:
   the panel's rows are eliminated among themselves pivot by pivot; then every row below
   gets the panel's NB updates at once (the panel's U[k][c] in registers, the multipliers
   U[k][r] / U[k][k] read by every lane at once), one read and one write of each entry per
   panel instead of per pivot (shared memory's bandwidth bounds this kernel). Compiled per
   G = ceil(n / 32) (-DG=...) and WARPS (-DWARPS=...). */
#define FULL 0xffffffffu
#define NB 8

__device__ __forceinline__ double* packed_row(double* U, int r, int n) {
    return U + (r * n - r * (r + 1) / 2);  /* [c] = U[r][c], c >= r */
}

__device__ __forceinline__ double pick(const double (&v)[G], int g) {
    double out = 0.0;
#pragma unroll
    for (int h = 0; h < G; ++h)
        if (h == g) out = v[h];
    return out;
}

extern "C" __global__ void __launch_bounds__(32 * WARPS) chol_solve_warp(
        const double* __restrict__ P, const double* __restrict__ b, double* __restrict__ x,
        int* __restrict__ status, const int n, const long long B) {
    extern __shared__ double smem[];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const long long m = (long long)blockIdx.x * WARPS + w;
    if (m >= B) return;  /* the whole warp: nothing below synchronises the block */
    const int tri = n * (n + 1) / 2;
    double* U = smem + (long long)w * (tri + n);
    double* inv = U + tri;
    const double* Pm = P + m * n * n;
    for (int r0 = 0; r0 < n; r0 += 4) {  /* the upper triangle, four rows' loads in flight */
        double v[4][G];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const int r = r0 + i, c = r + lane + 32 * g;
                v[i][g] = r < n && c < n ? Pm[r * n + c] : 0.0;
            }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const int r = r0 + i, c = r + lane + 32 * g;
                if (r < n && c < n) packed_row(U, r, n)[c] = v[i][g];
            }
    }
    double yr[G];  /* y of rows lane + 32 g */
#pragma unroll
    for (int g = 0; g < G; ++g) yr[g] = lane + 32 * g < n ? b[m * n + lane + 32 * g] : 0.0;
    __syncwarp();
    int bad = 0;
    for (int k0 = 0; k0 < n && !bad; k0 += NB) {
        const int k1 = min(k0 + NB, n);
        /* the panel: its rows eliminated among themselves, pivot by pivot (and y, all rows) */
        for (int k = k0; k < k1; ++k) {
            const double* Uk = packed_row(U, k, n);
            const double akk = Uk[k];
            if (!(akk > 0.0)) {  /* the same in every lane */
                bad = k + 1;
                break;
            }
            const double s = 1.0 / akk;
            if (lane == 0) inv[k] = s;
            const double yk = __shfl_sync(FULL, pick(yr, k >> 5), k & 31);
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const int c = lane + 32 * g;
                if (c > k && c < n) yr[g] -= Uk[c] * s * yk;
            }
            for (int r = k + 1; r < k1; ++r) {
                const double f = Uk[r] * s;
                double* Ur = packed_row(U, r, n);
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    const int c = lane + 32 * g;
                    if (c >= r && c < n) Ur[c] -= f * Uk[c];
                }
            }
            __syncwarp();
        }
        if (bad) break;
        /* the rows below: the panel's NB updates at once, U[k][c] of the panel in registers,
           one read and one write of each entry */
        double pk[NB][G];
#pragma unroll
        for (int j = 0; j < NB; ++j)
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const int c = lane + 32 * g;
                pk[j][g] = k0 + j < k1 && c < n ? packed_row(U, k0 + j, n)[c] : 0.0;
            }
        for (int r = k1; r < n; ++r) {
            double f[NB];
#pragma unroll
            for (int j = 0; j < NB; ++j)
                f[j] = k0 + j < k1 ? packed_row(U, k0 + j, n)[r] * inv[k0 + j] : 0.0;
            double* Ur = packed_row(U, r, n);
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const int c = lane + 32 * g;
                if (32 * g + 31 < r) continue;  /* the whole chunk left of the diagonal */
                double acc = 0.0;
#pragma unroll
                for (int j = 0; j < NB; ++j) acc += f[j] * pk[j][g];
                if (c >= r && c < n) Ur[c] -= acc;
            }
        }
        __syncwarp();
    }
    if (lane == 0) status[m] = bad;
    if (bad) return;
    for (int k = n - 1; k >= 0; --k) {  /* back substitution; yr becomes x */
        const double xk = __shfl_sync(FULL, pick(yr, k >> 5), k & 31) * inv[k];
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const int r = lane + 32 * g;
            if (r == k) yr[g] = xk;
            else if (r < k) yr[g] -= packed_row(U, r, n)[k] * xk;
        }
    }
#pragma unroll
    for (int g = 0; g < G; ++g)
        if (lane + 32 * g < n) x[m * n + lane + 32 * g] = yr[g];
}
"""
#: Largest n solved one warp per matrix (:data:`_CHOL_WARP_SOURCE`); larger n get a block.
CHOL_WARP_MAX = 64
#: Matrices (warps) per block of the warp kernel.
CHOL_WARPS = 4


@functools.cache
def _chol_warp_kernel(device: int, groups: int) -> Any:
    """The warp kernel for ``groups`` columns per lane, its dynamic shared memory allowed up to
    the device's opt-in limit once (as :func:`_chol_kernel`)."""
    options = (f"-DG={groups}", f"-DWARPS={CHOL_WARPS}")
    kernel = cupy.RawKernel(_CHOL_WARP_SOURCE, "chol_solve_warp", options=options)
    kernel.max_dynamic_shared_size_bytes = _shared_limit(device)
    return kernel


def _chol_warp_smem(n: int) -> int:
    return CHOL_WARPS * (n * (n + 1) // 2 + n) * 8


def _chol_warp_fits(n: int) -> bool:
    """n <= CHOL_WARP_MAX and the warp kernel's block (CHOL_WARPS matrices) fits the device's
    shared memory (68.6 KB at n = 64: not on a GPU of 48 or 64 KiB per block)."""
    return n <= CHOL_WARP_MAX and _chol_warp_smem(n) <= _shared_limit(cupy.cuda.Device().id)


def _chol_solve_warp(P: Any, b: Any, x: Any, status: Any) -> None:
    B, n = P.shape[0], P.shape[-1]
    kernel = _chol_warp_kernel(cupy.cuda.Device().id, _chol_groups(n))
    smem = _chol_warp_smem(n)
    blocks = -(-B // CHOL_WARPS)
    kernel(
        (blocks,), (32 * CHOL_WARPS,), (P, b, x, status, np.int32(n), np.int64(B)), shared_mem=smem
    )


# --------------------------------------------------------------- logistic terms, one launch
#: The elementwise chain of :func:`fedtheory.objectives.logistic` as one kernel: from margins
#: z, labels y and row weights sw, the loss l = log(1 + exp(-t)) (t = y z), the gradient weights
#: sw y sigmoid(-t) and the Hessian weights sw sigmoid(-t) sigmoid(t), with the NumPy path's
#: formulas (l = max(-t, 0) + log1p(exp(-|t|)), sigmoid(-t) = exp(-(l + t)),
#: sigmoid(t) = exp(-l)).
logistic_terms = cupy.ElementwiseKernel(
    "float64 z, float64 y, float64 sw",
    "float64 loss, float64 gw, float64 hw",
    """
    const double t = y * z;
    const double l = fmax(-t, 0.0) + log1p(exp(-fabs(t)));
    const double s = exp(-(l + t));
    loss = l;
    gw = sw * y * s;
    hw = sw * s * exp(-l);
    """,
    "fedtheory_logistic_terms",
)


# --------------------------------------------------------------- FedPAC's curvature average
_ema = cupy.ElementwiseKernel(
    "float64 th, float64 h, float64 rho, float64 rest",
    "float64 out",
    "out = __dadd_rn(__dmul_rn(th, rho), __dmul_rn(rest, h));",
    "fedtheory_ema",
)


def ema(Th: Any, H: Any, rho: float) -> Any:
    """rho Theta + (1 - rho) H for a CuPy stack H (Theta: the same stack or anything that
    broadcasts to it), in one pass into a new stack: each product and the sum rounded as the
    NumPy path rounds them (``__dmul_rn`` / ``__dadd_rn``: no fused multiply-add), so the
    result is the same bits. :meth:`fedtheory.methods._local.HessianEMA.ema` on CuPy; a
    batched FedPAC round at S = 64 made 61 launches of it (2.6 ms of 12, H200)."""
    out = cupy.empty(H.shape, dtype=cupy.float64)
    _ema(Th, H, float(rho), float(1 - rho), out)
    return out


# ------------------------------------------------------- the minibatch oracle, logistic, fused
_MINIBATCH_SOURCE = r"""
#define FULL 0xffffffffu

__device__ __forceinline__ double warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

// one warp per participant p: its b sampled rows (client ci[p], rows ri[p, :]) of A
// (N, n_max, d) read in place; the margins, the logistic terms of _logistic_terms with row
// weight sw, and then f[p] = sum_k sw loss_k + lam/2 |theta_p|^2 and
// g[p] = lam theta_p - sum_k gw_k a_k. Rows go in chunks of CH: the lanes' partial dot
// products of a chunk's rows (independent loads in flight), CH warp sums, then lane q
// computes the logistic terms of the chunk's row q (each row's exp / log1p once, not on
// every lane) and the chunk's gw are broadcast to add gw_q a_q to the gradient. The first
// 32 RC columns of the chunk's rows stay in registers between the two (each entry of A is
// read once for d <= 32 RC); the columns after them are read again in a last pass, with the
// gw of every row kept in shared memory (b per warp).
#define CH 8
#define RC 2
extern "C" __global__ void minibatch_logistic(
    const double* __restrict__ A, const double* __restrict__ y,
    const long long* __restrict__ ci, const long long* __restrict__ ri,
    const double* __restrict__ theta, const long long theta_stride,
    const long long m, const long long n_max, const long long d, const long long b,
    const double sw, const double lam, const int want_value, const int want_grad,
    double* __restrict__ f, double* __restrict__ g)
{
    extern __shared__ double gw_all[];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const long long p = (long long)blockIdx.x * (blockDim.x >> 5) + warp;
    if (p >= m) return;
    double* gw = gw_all + (long long)warp * b;
    const double* th = theta + p * theta_stride;
    const long long base = ci[p] * n_max;
    const long long* rows = ri + p * b;
    double loss_part = 0.0;
    double gacc[RC];
#pragma unroll
    for (int r = 0; r < RC; r++) gacc[r] = 0.0;
    for (long long c = 0; c < b; c += CH) {
        const int cnt = (int)(b - c < CH ? b - c : CH);
        const double* a[CH];
        double part[CH];
        double v[CH][RC];
#pragma unroll
        for (int q = 0; q < CH; q++) {
            a[q] = A + (base + rows[c + (q < cnt ? q : 0)]) * d;
            part[q] = 0.0;
        }
#pragma unroll
        for (int r = 0; r < RC; r++) {
            const long long j = lane + 32 * r;
            const double tj = j < d ? th[j] : 0.0;
#pragma unroll
            for (int q = 0; q < CH; q++) {
                v[q][r] = (j < d && q < cnt) ? a[q][j] : 0.0;
                part[q] += v[q][r] * tj;
            }
        }
        for (long long j = lane + 32 * RC; j < d; j += 32) {
            const double tj = th[j];
#pragma unroll
            for (int q = 0; q < CH; q++)
                if (q < cnt) part[q] += a[q][j] * tj;
        }
        double z = 0.0;
#pragma unroll
        for (int q = 0; q < CH; q++) {
            const double s = warp_sum(part[q]);
            if (lane == q) z = s;
        }
        double mine = 0.0;
        if (lane < cnt) {
            const long long r = base + rows[c + lane];
            const double yk = y[r];
            const double t = yk * z;
            const double l = fmax(-t, 0.0) + log1p(exp(-fabs(t)));
            const double s = exp(-(l + t));
            loss_part += sw * l;
            mine = sw * yk * s;
            gw[c + lane] = mine;
        }
#pragma unroll
        for (int q = 0; q < CH; q++) {
            const double gq = __shfl_sync(FULL, mine, q);
#pragma unroll
            for (int r = 0; r < RC; r++) gacc[r] += gq * v[q][r];
        }
    }
    __syncwarp();
    if (want_value) {
        double q = 0.0;
        for (long long j = lane; j < d; j += 32) q += th[j] * th[j];
        q = warp_sum(q);
        const double loss_sum = warp_sum(loss_part);
        if (lane == 0) f[p] = loss_sum + 0.5 * lam * q;
    }
    if (want_grad) {
#pragma unroll
        for (int r = 0; r < RC; r++) {
            const long long j = lane + 32 * r;
            if (j < d) g[p * d + j] = lam * th[j] - gacc[r];
        }
        for (long long j = lane + 32 * RC; j < d; j += 32) {
            double acc = 0.0;
            for (long long k = 0; k < b; k++) acc += gw[k] * A[(base + rows[k]) * d + j];
            g[p * d + j] = lam * th[j] - acc;
        }
    }
}
"""

#: warps (participants) per block of :func:`minibatch_logistic`, and the largest minibatch
#: it takes (its weights live in shared memory, b doubles per warp)
_MB_WARPS, MINIBATCH_MAX_B = 4, 1024


@functools.cache
def _minibatch_kernel(device: int) -> Any:
    return cupy.RawKernel(_MINIBATCH_SOURCE, "minibatch_logistic")


def minibatch_fits(A: Any, b: int) -> bool:
    """Whether :func:`minibatch_logistic` takes this data and minibatch size: a dense float64
    CuPy stack (N, n_max, d) and b <= MINIBATCH_MAX_B."""
    return (
        isinstance(A, cupy.ndarray)
        and A.ndim == 3
        and A.dtype == cupy.float64
        and A.flags.c_contiguous
        and 1 <= b <= MINIBATCH_MAX_B
    )


def minibatch_logistic(
    A: Any,
    y: Any,
    ci: Any,
    ri: Any,
    theta: Any,
    lam: float,
    value: bool,
    grad: bool,
) -> tuple[Any, Any]:
    """The minibatch oracle of the logistic loss (:class:`fedtheory.oracles.Minibatch`:
    f_i^B and g_i^B of participant i's b sampled rows, weight 1 / b each) in ONE kernel,
    reading the sampled rows of A in place: what ``A[ci, ri]`` (a gathered (m, b, d) copy),
    the margins, :data:`logistic_terms` and the transposed product compute, with the same
    formulas, summed in another order (agrees to rounding). ``ci`` (m,) the participants'
    clients, ``ri`` (m, b) their rows, ``theta`` (d,) or (m, d). Returns (f or None, g or
    None). Replaces about 15 launches and the gathered copy (a batched SCAFFOLD round of
    64,000 participants with b = 8: 205 MB)."""
    m, b = ri.shape
    N, n_max, d = A.shape
    theta = cupy.ascontiguousarray(theta, dtype=cupy.float64)
    stride = 0 if theta.ndim == 1 else d
    ci = cupy.ascontiguousarray(ci, dtype=cupy.int64).reshape(-1)
    ri = cupy.ascontiguousarray(ri, dtype=cupy.int64)
    f = cupy.empty(m, dtype=cupy.float64) if value else None
    g = cupy.empty((m, d), dtype=cupy.float64) if grad else None
    dummy = cupy.empty(1, dtype=cupy.float64)
    blocks = (m + _MB_WARPS - 1) // _MB_WARPS
    _minibatch_kernel(cupy.cuda.Device().id)(
        (blocks,),
        (32 * _MB_WARPS,),
        (
            A,
            cupy.ascontiguousarray(y, dtype=cupy.float64),
            ci,
            ri,
            theta,
            np.int64(stride),
            np.int64(m),
            np.int64(n_max),
            np.int64(d),
            np.int64(b),
            np.float64(1.0 / b),
            np.float64(lam),
            np.int32(bool(value)),
            np.int32(bool(grad)),
            dummy if f is None else f,
            dummy if g is None else g,
        ),
        shared_mem=_MB_WARPS * b * 8,
    )
    return f, g
