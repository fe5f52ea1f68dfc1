"""The operand layouts that fedtheory.gpu_blas hands to cuBLAS, checked without a GPU.

``gpu_blas._layout`` reads only an array's shape, strides and item size, so NumPy views stand
in for CuPy ones here. Property: whenever it accepts a (B, r, c) view, the layout it returns
(row- or column-major, leading dimension, batch stride) addresses every element of the view
exactly where the view's strides put it, and the leading dimension is one cuBLAS accepts
(at least the row length of the stored matrix). Views it refuses are copied by the caller.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtheory import gpu_blas


def _offsets_agree(view: np.ndarray, layout: tuple) -> bool:
    _, row_major, ld, sb = layout
    B, r, c = view.shape
    it = view.itemsize
    for b in range(B):
        for i in range(r):
            for j in range(c):
                true = (b * view.strides[0] + i * view.strides[1] + j * view.strides[2]) // it
                claimed = b * sb + (i * ld + j if row_major else i + j * ld)
                if true != claimed:
                    return False
    return True


@st.composite
def views(draw):
    """A non-empty (B, r, c) float64 view of a base array: transposed, sliced with steps
    (sometimes negative), with axes of length 1, or broadcast (stride 0)."""
    B, r, c = (draw(st.integers(1, 4)) for _ in range(3))  # matmul never passes empty ones
    base = np.arange(float(4 * (B + 1) * (r + 1) * (c + 1)))
    kinds = ["c", "f", "wide", "tall", "step", "neg", "bcast_batch", "bcast_row", "newaxis"]
    kind = draw(st.sampled_from(kinds))
    extra = draw(st.integers(1, 3))
    if kind == "c":
        v = base[: B * r * c].reshape(B, r, c)
    elif kind == "f":
        v = base[: B * r * c].reshape(B, c, r).transpose(0, 2, 1)
    elif kind == "wide":  # the first c columns of wider rows: leading dimension c + extra
        v = base[: B * r * (c + extra)].reshape(B, r, c + extra)[:, :, :c]
    elif kind == "tall":  # the same, column-major
        v = base[: B * c * (r + extra)].reshape(B, c, r + extra)[:, :, :r].transpose(0, 2, 1)
    elif kind == "step":
        step = draw(st.integers(2, 3))
        v = base[: B * r * c * step].reshape(B, r, c * step)[:, :, ::step]
    elif kind == "neg":
        v = base[: B * r * c].reshape(B, r, c)[:, ::-1]
    elif kind == "bcast_batch":
        v = np.broadcast_to(base[: r * c].reshape(r, c), (B, r, c))
    elif kind == "bcast_row":
        v = np.broadcast_to(base[:c], (B, r, c))
    else:
        v = base[: B * r].reshape(B, r)[:, :, None]
        c = 1
    return v


@settings(max_examples=300, deadline=None)
@given(views())
def test_an_accepted_layout_addresses_every_element_of_the_view(v):
    layout = gpu_blas._layout(v)
    if layout is None:  # the caller copies the view: the copy is always taken as it is
        assert gpu_blas._layout(np.ascontiguousarray(v)) is not None
        return
    assert layout[0] is v
    _, row_major, ld, sb = layout
    B, r, c = v.shape
    assert ld >= max(1, c if row_major else r) and sb >= 0
    assert _offsets_agree(v, layout)


def test_contiguous_and_transposed_stacks_are_taken_as_they_are():
    a = np.zeros((4, 3, 5))
    assert gpu_blas._layout(a)[1:] == (True, 5, 15)
    assert gpu_blas._layout(a.transpose(0, 2, 1))[1:] == (False, 5, 15)
    assert gpu_blas._layout(a[:1])[3] == 0  # one matrix: batch stride 0
    assert gpu_blas._layout(a[:, ::-1]) is None  # negative strides: copied
