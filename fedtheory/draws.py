"""Per-seed random draws of a batch in one compiled call, bit for bit NumPy's own.

A batch of B seeds (:func:`fedtheory.runner.run_batch`) keeps one ``np.random.default_rng(seed)``
per seed so that each seed draws exactly what ``run(seed=...)`` draws. Making those draws with
a Python loop over the B generators costs 6 to 14 us per generator and round for a
participation draw (``Generator.choice`` + sort; benchmarks/results/draws_issue15.txt), most of
a batched sweep's host time. Here one Numba call draws
for all B generators, driving each PCG64 through NumPy's documented ctypes interface
(``bit_generator.ctypes``: ``state_address`` and the ``next_uint32`` / ``next_uint64``
function pointers, "Extending via Numba" in NumPy's documentation) and replicating NumPy's
algorithms on top of them, so every generator gives the same numbers and is left in exactly
the state that NumPy's own call leaves it in (PCG64's buffered 32-bit half included: it lives
in the generator's state and ``next_uint32`` keeps it there).

- :func:`choice_sorted`: ``np.sort(g.choice(N, size=S, replace=False))`` for every g, the
  participants of a round. NumPy's ``Generator.choice`` for an integer population without
  ``p``: Floyd's algorithm (with its open-addressing hash set) and then ``_shuffle_int`` of the
  sample (it consumes random numbers although the order is sorted away here), or, for
  N > 10000 and S > N // 50, a partial Fisher-Yates shuffle of ``arange(N)`` keeping its last
  S entries. Every bounded integer is ``random_bounded_uint64`` (Lemire's method on
  ``next_uint32`` for a range below 2**32, on ``next_uint64`` above it).
- :func:`integers_rows`: ``g.integers(0, high[:, None], size=(m, b))`` for the rows of each
  run, the rows of a minibatch oracle (:class:`fedtheory.oracles.Minibatch`).

Both look the generators' state addresses up once per list of generators (a batch asks for
the same ones every round).

The algorithms were read in NumPy's source (``numpy/random/_generator.pyx``,
``_bounded_integers.pyx.in``, ``src/distributions/distributions.c``) and are the same, line for
line, in every release from 1.26.0 (the floor of ``constraints-min.txt``) to 2.4.6 and on
NumPy's main branch of August 2026; ``tests/test_draws.py`` compares the values and the
generators' states with NumPy's own calls. Only PCG64 generators (what ``default_rng`` makes)
are accepted; anything else is refused with an error naming it, never drawn differently. The
compiled call does not take the generators' locks: no other thread may use them meanwhile (a
batch's generators are its own).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import llvmlite.binding as _llvm
import numba as nb
import numpy as np
from numba import types

from .errors import FedTheoryError, check


def _function_addresses() -> tuple[int, int]:
    """The C functions behind every PCG64's ``ctypes.next_uint32`` / ``next_uint64``: one
    static function each in NumPy's _pcg64 module, the same for every PCG64 object (only
    these pointers are kept, not the throwaway generator's state)."""
    iface = np.random.PCG64(0).ctypes
    return (
        ctypes.cast(iface.next_uint32, ctypes.c_void_p).value,
        ctypes.cast(iface.next_uint64, ctypes.c_void_p).value,
    )


# reached from compiled code by symbol name, so the compiled functions are cached on disk (a
# constant address would pin the cache to one process)
_NEXT_UINT32, _NEXT_UINT64 = _function_addresses()
_llvm.add_symbol("fedtheory_pcg64_next_uint32", _NEXT_UINT32)
_llvm.add_symbol("fedtheory_pcg64_next_uint64", _NEXT_UINT64)
# the argument is the state's address (``void *`` in C, passed as a 64-bit integer)
_next_uint32 = types.ExternalFunction("fedtheory_pcg64_next_uint32", types.uint32(types.uint64))
_next_uint64 = types.ExternalFunction("fedtheory_pcg64_next_uint64", types.uint64(types.uint64))

_U = np.uint64
_M32 = _U(0xFFFFFFFF)
_M64 = _U(0xFFFFFFFFFFFFFFFF)  # also the empty slot of Floyd's hash set (<uint64_t>-1)
_TAIL_MIN_N = 10000  # choice: populations above this may take the tail-shuffle branch
_TAIL_CUTOFF = 50  # ... when S > N // 50 (NumPy's cutoff with shuffle=True)
_INSERTION_MAX = 32  # sorting a row of S distinct draws: insertion sort up to this S,
_MARKS_FACTOR = 8  # then marks on [0, N) while N <= 8 S, else NumPy's sort


@nb.njit(cache=True, nogil=True)
def _mulhi(x: int, y: int) -> int:
    """The high 64 bits of the 128-bit product x * y (the emulation in NumPy's
    ``bounded_lemire_uint64`` for compilers without a 128-bit integer)."""
    x0, x1 = x & _M32, x >> _U(32)
    y0, y1 = y & _M32, y >> _U(32)
    w0 = x0 * y0
    t = x1 * y0 + (w0 >> _U(32))
    w1 = t & _M32
    w2 = t >> _U(32)
    w1 += x0 * y1
    return x1 * y1 + w2 + (w1 >> _U(32))


@nb.njit(cache=True, nogil=True)
def _bounded(state: int, rng: int) -> int:
    """NumPy's ``random_bounded_uint64(bitgen, 0, rng, 0, use_masked=False)``: uniform on the
    closed range [0, rng] (uint64), Lemire's method."""
    if rng == _U(0):
        return _U(0)
    if rng <= _M32:
        if rng == _M32:
            return _U(_next_uint32(state))
        # buffered_bounded_lemire_uint32, in uint64 arithmetic (no product exceeds 64 bits)
        excl = rng + _U(1)
        m = _U(_next_uint32(state)) * excl
        leftover = m & _M32
        if leftover < excl:
            threshold = (_M32 - rng) % excl
            while leftover < threshold:
                m = _U(_next_uint32(state)) * excl
                leftover = m & _M32
        return m >> _U(32)
    if rng == _M64:
        return _next_uint64(state)
    # bounded_lemire_uint64
    excl = rng + _U(1)
    x = _next_uint64(state)
    leftover = x * excl  # the low 64 bits of the product
    if leftover < excl:
        threshold = (_M64 - rng) % excl
        while leftover < threshold:
            x = _next_uint64(state)
            leftover = x * excl
    return _mulhi(x, excl)


@nb.njit(cache=True, nogil=True)
def _shuffle_int(state: int, n: int, first: int, data: np.ndarray) -> None:
    """NumPy's ``_shuffle_int``: swaps data[i] with data[j], j uniform in [0, i], for
    i = n - 1, ..., first."""
    for i in range(n - 1, first - 1, -1):
        j = _bounded(state, _U(i))
        tmp = data[j]
        data[j] = data[i]
        data[i] = tmp


@nb.njit(cache=True, nogil=True)
def _gen_mask(v: int) -> int:
    """The smallest all-ones bit mask >= v (NumPy's ``_gen_mask``)."""
    v |= v >> _U(1)
    v |= v >> _U(2)
    v |= v >> _U(4)
    v |= v >> _U(8)
    v |= v >> _U(16)
    v |= v >> _U(32)
    return v


@nb.njit(cache=True, nogil=True)
def _floyd(state: int, N: int, S: int, out: np.ndarray, hash_set: np.ndarray) -> None:
    """``Generator.choice(N, S, replace=False)`` by Floyd's algorithm into ``out`` (S,), in
    NumPy's order (its hash set decides membership; its final shuffle is made)."""
    mask = _gen_mask(_U(1.2 * S))  # <uint64_t>(1.2 * size): a double, truncated
    hash_set[: mask + _U(1)] = _M64
    for j in range(N - S, N):
        uj = _U(j)
        val = _bounded(state, uj)
        loc = val & mask
        while hash_set[loc] != _M64 and hash_set[loc] != val:
            loc = (loc + _U(1)) & mask
        if hash_set[loc] == _M64:  # val not in the set
            hash_set[loc] = val
            out[j - N + S] = val
        else:  # insert j instead
            loc = uj & mask
            while hash_set[loc] != _M64:
                loc = (loc + _U(1)) & mask
            hash_set[loc] = uj
            out[j - N + S] = j
    _shuffle_int(state, S, 1, out)


@nb.njit(cache=True, nogil=True)
def _choice(states: np.ndarray, N: int, S: int, tail: bool, ordered: bool) -> np.ndarray:
    """Row b: ``choice(N, S, replace=False)`` from the PCG64 whose state is at states[b];
    sorted unless ``ordered`` (then NumPy's own order)."""
    B = states.shape[0]
    out = np.empty((B, S), dtype=np.int64)
    if tail:
        idx = np.empty(N, dtype=np.int64)
        for b in range(B):
            for i in range(N):
                idx[i] = i
            _shuffle_int(states[b], N, max(N - S, 1), idx)
            out[b] = idx[N - S :]
    else:
        hash_set = np.empty(int(_gen_mask(_U(1.2 * S))) + 1, dtype=np.uint64)
        for b in range(B):
            _floyd(states[b], N, S, out[b], hash_set)
    if not ordered and S > 1:
        marks = np.empty(N if S > _INSERTION_MAX and N <= _MARKS_FACTOR * S else 0, np.bool_)
        for b in range(B):
            _sort_distinct(out[b], marks)
    return out


@nb.njit(cache=True, nogil=True)
def _sort_distinct(row: np.ndarray, marks: np.ndarray) -> None:
    """Sort distinct integers in [0, N) in place: insertion sort for a short row, marks on
    ``marks`` (N,) when it is given (a dense sample), else NumPy's sort (the same result:
    distinct values have one sorted order)."""
    S = row.shape[0]
    if S <= _INSERTION_MAX:
        for i in range(1, S):
            v = row[i]
            k = i - 1
            while k >= 0 and row[k] > v:
                row[k + 1] = row[k]
                k -= 1
            row[k + 1] = v
    elif marks.shape[0] > 0:
        marks[:] = False
        for i in range(S):
            marks[row[i]] = True
        k = 0
        for v in range(marks.shape[0]):
            if marks[v]:
                row[k] = v
                k += 1
    else:
        row.sort()


@nb.njit(cache=True, nogil=True)
def _integers_rows(states: np.ndarray, runs: np.ndarray, high: np.ndarray, b: int) -> np.ndarray:
    """Row j: b integers in [0, high[j]) from the PCG64 of run runs[j], rows in their order
    (the order each run's ``integers(0, high[rows][:, None], size=(m, b))`` draws them)."""
    n = runs.shape[0]
    out = np.empty((n, b), dtype=np.int64)
    for j in range(n):
        state = states[runs[j]]
        rng = _U(high[j] - 1)
        for k in range(b):
            out[j, k] = _bounded(state, rng)
    return out


#: The last generators whose states were looked up, and their states: a batch asks for the
#: same generators every round (1.4 us per generator to look up; 1000 seeds: 1.4 ms a round).
#: Holding the generators keeps their states alive at those addresses. A batch passes one
#: tuple round after round, recognised by identity (comparing 1000 generators one by one took
#: 0.17 ms a call, a third of a batched S = 1 round's host time on the GPU machine).
_LAST: list[Any] = [None, None]


def _states(generators: Sequence[np.random.Generator]) -> np.ndarray:
    """The state addresses (uint64) of PCG64 generators; an error names any other. A PCG64
    object (the exact class) draws through its module's C functions, the ones compiled in
    here: its C constructor sets them and nothing in Python can change them."""
    last, states = _LAST
    if generators is last:  # the same tuple (immutable): a batch's, round after round
        return states
    same = last is not None and len(last) == len(generators)
    if same and all(a is b for a, b in zip(last, generators, strict=True)):
        if isinstance(generators, tuple):
            _LAST[0] = generators  # its next call is answered by identity
        return states
    states = _lookup_states(generators)
    states.flags.writeable = False
    _LAST[:] = [generators if isinstance(generators, tuple) else tuple(generators), states]
    return states


def _lookup_states(generators: Sequence[np.random.Generator]) -> np.ndarray:
    bgs = [g.bit_generator if isinstance(g, np.random.Generator) else None for g in generators]
    for b, bg in enumerate(bgs):
        if type(bg) is not np.random.PCG64:
            raise FedTheoryError(
                f"compiled draws need numpy.random.Generator objects on PCG64 (what default_rng "
                f"makes); generator {b} is {generators[b]!r}"
            )
    return np.array([_state_address(bg) for bg in bgs], dtype=np.uint64)


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _state_address(bg: np.random.PCG64) -> int:
    """``bg.ctypes.state_address``, read from the bit generator's ``capsule`` (a
    ``bitgen_t *`` whose first field is the state pointer: NumPy's C interface of bit
    generators, ``numpy/random/bitgen.h``): about 1 us, where building the ctypes interface
    takes 15 us on first use (15 ms for a batch of 1000 seeds)."""
    return ctypes.c_void_p.from_address(_capsule_pointer(bg.capsule, b"BitGenerator")).value


def _check_choice(N: int, S: int) -> None:
    check(
        isinstance(N, (int, np.integer)) and N >= 1,
        f"population N must be an integer >= 1, got {N!r}",
    )
    check(
        isinstance(S, (int, np.integer)) and 0 <= S <= N,
        f"sample size S must be an integer in 0..N = {N}, got {S!r}",
    )


def choice_sorted(generators: Sequence[np.random.Generator], N: int, S: int) -> np.ndarray:
    """(B, S) int64: row b is ``np.sort(generators[b].choice(N, size=S, replace=False))``,
    and every generator is left in the state that call leaves it in. Generators must be PCG64
    (``np.random.default_rng``); the same generator may appear more than once (its draws are
    then made in list order, as a loop would)."""
    _check_choice(N, S)
    N, S = int(N), int(S)
    return _choice(_states(generators), N, S, _tail(N, S), False)


def choice_rows(generators: Sequence[np.random.Generator], N: int, S: int) -> np.ndarray:
    """(B, S) int64: row b is ``generators[b].choice(N, size=S, replace=False)`` in NumPy's
    order (not sorted); as :func:`choice_sorted` otherwise."""
    _check_choice(N, S)
    N, S = int(N), int(S)
    return _choice(_states(generators), N, S, _tail(N, S), True)


def _tail(N: int, S: int) -> bool:
    """Whether NumPy's choice takes its tail-shuffle branch (shuffle=True: cutoff 50)."""
    return N > _TAIL_MIN_N and S > N // _TAIL_CUTOFF


def integers_rows(
    generators: Sequence[np.random.Generator], runs: np.ndarray, high: np.ndarray, b: int
) -> np.ndarray:
    """(n, b) int64: the rows of every run, row j drawing b integers in [0, high[j]) from
    ``generators[runs[j]]``; equal to each run r's
    ``generators[r].integers(0, high[rows][:, None], size=(len(rows), b))`` with ``rows`` its
    rows in order, and leaving every generator in that call's state (a run with no row draws
    nothing)."""
    runs = np.ascontiguousarray(runs, dtype=np.int64)
    high = np.ascontiguousarray(high, dtype=np.int64)
    check(
        runs.ndim == 1 and high.shape == runs.shape,
        f"runs and high must be two 1-d arrays of one length, got shapes {runs.shape} and "
        f"{high.shape}",
    )
    check(isinstance(b, (int, np.integer)) and b >= 0, f"b must be an integer >= 0, got {b!r}")
    check(
        runs.size == 0 or (runs.min() >= 0 and runs.max() < len(generators)),
        f"runs must index the {len(generators)} generators",
    )
    check(runs.size == 0 or high.min() >= 1, "every high must be >= 1 (high = 0 is an empty range)")
    return _integers_rows(_states(generators), runs, high, int(b))
