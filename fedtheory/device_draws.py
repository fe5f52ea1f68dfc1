"""A batch's draws made on the GPU, bit for bit NumPy's own (issue 15, item 2).

Imported only from CuPy code paths (it imports CuPy at its top): the NumPy path never loads it.

A batched sweep on the GPU (:func:`fedtheory.runner.run_batch`) draws, every round, each seed's
participants and each stochastic oracle call's minibatch rows from that seed's
``np.random.default_rng(seed)``. Made on the host (:mod:`fedtheory.draws`) they bound a
replayed round: 1000 seeds at S = 64 with a minibatch of 8 rows draw 512,000 bounded integers
a round, 2.5 ms on one core of the GPU machine, against 0.9 ms of kernels (session 8). Here the
generators' states are copied to the device and the same algorithms run there, one thread per
generator, inside the recorded round:

- PCG64 (NumPy's ``PCG64``: the 128-bit LCG with NumPy's multiplier, stepped before its
  XSL-RR output; ``next_uint32`` hands out the two halves of one 64-bit output, low half
  first, keeping the high half in the state's ``has_uint32`` / ``uinteger``, as NumPy does);
- bounded integers below 2**32 by Lemire's method on ``next_uint32``
  (``buffered_bounded_lemire_uint32``, NumPy's ``integers`` for such a range);
- ``np.sort(choice(N, S, replace=False))`` by Floyd's algorithm with NumPy's open-addressing
  hash set and its final ``_shuffle_int`` (whose order the sort then discards);
- ``integers(0, n_i, size=(S, b))`` for each run's minibatch rows, row by row in order.

These are the algorithms of :mod:`fedtheory.draws` (read in NumPy's source there), line for
line; ``tests/test_device_draws.py`` (GPU) compares the values AND the generators' states
afterwards (:meth:`DeviceGenerators.to_host`) with NumPy's own calls. The states travel through
NumPy's documented ``bit_generator.state`` dict (no struct layout is assumed). Ranges of 2**32
or more, and the branch of NumPy's ``choice`` that shuffles a whole population (N > 10000 and
S > N // 50), are not done here: :func:`supported` says so and the host draws instead.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import cupy
import numpy as np

from .draws import _gen_mask, _tail
from .errors import check

_SOURCE = r"""
typedef unsigned long long u64;
typedef unsigned int u32;

struct Pcg { u64 lo, hi, inc_lo, inc_hi; u32 has, u; };

__device__ __forceinline__ Pcg pcg_load(const u64* s) {
    Pcg g;
    g.lo = s[0]; g.hi = s[1]; g.inc_lo = s[2]; g.inc_hi = s[3];
    g.has = (u32)s[4]; g.u = (u32)s[5];
    return g;
}

__device__ __forceinline__ void pcg_store(u64* s, const Pcg& g) {
    s[0] = g.lo; s[1] = g.hi; s[2] = g.inc_lo; s[3] = g.inc_hi;
    s[4] = g.has; s[5] = g.u;
}

// state = state * M + inc (mod 2**128), then the XSL-RR output of the new state
__device__ __forceinline__ u64 pcg_next64(Pcg& g) {
    const u64 m_lo = 4865540595714422341ULL, m_hi = 2549297995355413924ULL;
    u64 lo = g.lo * m_lo;
    u64 hi = __umul64hi(g.lo, m_lo) + g.lo * m_hi + g.hi * m_lo;
    u64 new_lo = lo + g.inc_lo;
    hi += g.inc_hi + (new_lo < lo ? 1ULL : 0ULL);
    g.lo = new_lo;
    g.hi = hi;
    u64 x = hi ^ new_lo;
    u32 r = (u32)(hi >> 58);
    return (x >> r) | (x << ((64u - r) & 63u));
}

__device__ __forceinline__ u32 pcg_next32(Pcg& g) {
    if (g.has) {
        g.has = 0;
        return g.u;
    }
    u64 v = pcg_next64(g);
    g.has = 1;
    g.u = (u32)(v >> 32);
    return (u32)(v & 0xffffffffULL);
}

// uniform on [0, rng], rng < 2**32 - 1 (ranges are below 2**32 here): NumPy's
// random_bounded_uint64 for such a range (buffered_bounded_lemire_uint32)
__device__ __forceinline__ u64 bounded(Pcg& g, u64 rng) {
    if (rng == 0ULL) return 0ULL;
    u64 excl = rng + 1ULL;
    u64 m = (u64)pcg_next32(g) * excl;
    u64 leftover = m & 0xffffffffULL;
    if (leftover < excl) {
        u64 threshold = (0xffffffffULL - rng) % excl;
        while (leftover < threshold) {
            m = (u64)pcg_next32(g) * excl;
            leftover = m & 0xffffffffULL;
        }
    }
    return m >> 32;
}

// row b: np.sort(choice(N, S, replace=False)) from generator b (Floyd + _shuffle_int)
extern "C" __global__ void fedtheory_choice_sorted(
    u64* states, const long long B, const long long N, const long long S,
    const u64 mask, u64* hash_sets, long long* out)
{
    const long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    Pcg g = pcg_load(states + 6 * b);
    u64* hs = hash_sets + b * (long long)(mask + 1ULL);
    long long* o = out + b * S;
    const u64 empty = 0xffffffffffffffffULL;
    for (u64 i = 0; i <= mask; i++) hs[i] = empty;
    for (long long j = N - S; j < N; j++) {
        const u64 uj = (u64)j;
        const u64 val = bounded(g, uj);
        u64 loc = val & mask;
        while (hs[loc] != empty && hs[loc] != val) loc = (loc + 1ULL) & mask;
        if (hs[loc] == empty) {
            hs[loc] = val;
            o[j - N + S] = (long long)val;
        } else {
            loc = uj & mask;
            while (hs[loc] != empty) loc = (loc + 1ULL) & mask;
            hs[loc] = uj;
            o[j - N + S] = j;
        }
    }
    for (long long i = S - 1; i >= 1; i--) {  // _shuffle_int(S, first=1)
        const long long k = (long long)bounded(g, (u64)i);
        const long long tmp = o[k];
        o[k] = o[i];
        o[i] = tmp;
    }
    for (long long i = 1; i < S; i++) {  // sort the distinct draws (insertion)
        const long long v = o[i];
        long long k = i - 1;
        while (k >= 0 && o[k] > v) {
            o[k + 1] = o[k];
            k--;
        }
        o[k + 1] = v;
    }
    pcg_store(states + 6 * b, g);
}

// rows r*per .. r*per + per - 1 are run r's: row j draws b integers in [0, sizes[clients[j]])
extern "C" __global__ void fedtheory_integers_rows(
    u64* states, const long long B, const long long per, const long long* clients,
    const long long* sizes, const long long nb, long long* out)
{
    const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= B) return;
    Pcg g = pcg_load(states + 6 * r);
    for (long long j = r * per; j < (r + 1) * per; j++) {
        const u64 rng = (u64)(sizes[clients[j]] - 1);
        for (long long k = 0; k < nb; k++) out[j * nb + k] = (long long)bounded(g, rng);
    }
    pcg_store(states + 6 * r, g);
}
"""

_THREADS = 128
_M64 = (1 << 64) - 1
_LIMIT = 1 << 32  # ranges handled here: below 2**32


@functools.cache
def _kernels(device: int) -> tuple[Any, Any]:
    module = cupy.RawModule(code=_SOURCE, options=("-std=c++14",))
    return (
        module.get_function("fedtheory_choice_sorted"),
        module.get_function("fedtheory_integers_rows"),
    )


def supported(N: int, S: int, sizes: np.ndarray) -> str:
    """Why a batch's draws cannot be made here ("" when they can): a population or a client's
    row count of 2**32 or more, or NumPy's whole-population shuffle branch of ``choice``."""
    if N >= _LIMIT or (sizes.size and int(sizes.max()) >= _LIMIT):
        return "a range of 2**32 or more"
    if S < N and _tail(N, S):
        return f"choice({N}, {S}) takes NumPy's whole-population shuffle"
    return ""


class DeviceGenerators:
    """The states of a batch's PCG64 generators on the device, (B, 6) uint64 (the state's low
    and high words, the increment's, ``has_uint32``, ``uinteger``), advanced by the draws made
    here; :meth:`to_host` writes them back into the generators.

    ``N``, ``S``: the batch's clients and participants per run; ``sizes``: the clients' row
    counts (host). Everything the kernels read besides the states is allocated here, outside
    any recording, so that the draws can be recorded in a CUDA graph.
    """

    def __init__(
        self, generators: Sequence[np.random.Generator], N: int, S: int, sizes: np.ndarray
    ) -> None:
        why = supported(N, S, np.asarray(sizes))
        check(not why, f"draws on the device: {why}")
        self.B, self.N, self.S = len(generators), int(N), int(S)
        host = np.empty((self.B, 6), dtype=np.uint64)
        for b, g in enumerate(generators):
            bg = g.bit_generator
            check(
                type(bg) is np.random.PCG64,
                f"draws on the device need PCG64 generators (default_rng); generator {b} is {g!r}",
            )
            st = bg.state
            s, inc = st["state"]["state"], st["state"]["inc"]
            host[b] = (s & _M64, s >> 64, inc & _M64, inc >> 64, st["has_uint32"], st["uinteger"])
        self.states = cupy.asarray(host)
        self.sizes = cupy.asarray(np.asarray(sizes, dtype=np.int64))
        self.mask = int(_gen_mask(np.uint64(1.2 * self.S))) if self.S < self.N else 0
        self.hash_sets = cupy.empty(self.B * (self.mask + 1), dtype=cupy.uint64)
        self.every = (
            cupy.tile(cupy.arange(self.N, dtype=cupy.int64), self.B) if self.S == self.N else None
        )
        self._choice, self._integers = _kernels(cupy.cuda.Device().id)

    def _grid(self) -> tuple[tuple[int], tuple[int]]:
        return ((self.B + _THREADS - 1) // _THREADS,), (_THREADS,)

    def participants(self, out: Any) -> None:
        """Each run's sorted participants of a round into ``out`` (B * S,) int64, run-major:
        ``np.sort(g.choice(N, S, replace=False))`` per generator; S = N draws nothing."""
        check(out.size == self.B * self.S and out.dtype == cupy.int64, "participants buffer")
        if self.every is not None:
            cupy.copyto(out, self.every)
            return
        self._choice(
            *self._grid(),
            (
                self.states,
                np.int64(self.B),
                np.int64(self.N),
                np.int64(self.S),
                np.uint64(self.mask),
                self.hash_sets,
                out,
            ),
        )

    def integers_rows(self, clients: Any, b: int) -> Any:
        """(m, b) int64 on the device: row j draws b integers in [0, n_{clients[j]}) from its
        run's generator (rows run-major, m / B per run, each run's in order), as each run's
        ``integers(0, n[:, None], size=(m / B, b))``."""
        m = int(clients.size)
        check(m % self.B == 0, f"{m} rows do not split into {self.B} runs")
        out = cupy.empty((m, int(b)), dtype=cupy.int64)
        self._integers(
            *self._grid(),
            (
                self.states,
                np.int64(self.B),
                np.int64(m // self.B),
                cupy.ascontiguousarray(clients, dtype=cupy.int64),
                self.sizes,
                np.int64(b),
                out,
            ),
        )
        return out

    def to_host(self, generators: Sequence[np.random.Generator]) -> None:
        """Write the device states back into ``generators`` (the B generators these were
        read from, in order), so that host draws go on from where the device's stopped."""
        check(len(generators) == self.B, f"{len(generators)} generators for {self.B} states")
        host = self.states.get()
        for g, (lo, hi, ilo, ihi, has, u) in zip(generators, host.tolist(), strict=True):
            g.bit_generator.state = {
                "bit_generator": "PCG64",
                "state": {"state": (hi << 64) | lo, "inc": (ihi << 64) | ilo},
                "has_uint32": int(has),
                "uinteger": int(u),
            }
