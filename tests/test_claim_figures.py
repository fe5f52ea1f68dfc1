"""Every first-round claim (C1-C12, EXT-PP) has a figure that agrees with its verdict.

Each check runs once, in quick mode (a module-scoped cache), and its record feeds every test
below. A figure must have a title naming the claim and its verdict, be savable as PNG, draw
the float floor wherever it draws errors, and (C8) word its legend by the claim's own pass
band. A failed record (a real mutation, a flipped copy, a check that raised) is titled FAIL.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import pytest

from fedtheory.claims import ClaimRecord, claim_ids, load_check, record, run_claim
from fedtheory.claims_figures import claim_figure
from fedtheory.plot import save


def _first_round(claim_id: str) -> bool:
    stem = Path(load_check(claim_id).__file__).stem
    m = re.match(r"c(\d\d)_", stem)
    return stem == "ext_partial_participation" or (m is not None and int(m.group(1)) <= 12)


FIRST_ROUND = [c for c in claim_ids() if _first_round(c)]
# a figure that falls back to a text panel warns; here that is an error
pytestmark = pytest.mark.filterwarnings("error:the figure of:RuntimeWarning")
WITHOUT_ERRORS = {"C12"}  # symbolic: nothing is drawn that has a float floor
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def records():
    """claim id -> its quick-mode record, each check run at most once in this module."""
    cache: dict[str, ClaimRecord] = {}

    def get(claim_id: str) -> ClaimRecord:
        if claim_id not in cache:
            cache[claim_id] = run_claim(claim_id, quick=True)
        return cache[claim_id]

    return get


def _title(fig) -> str:
    sup = getattr(fig, "_suptitle", None)  # Figure.get_suptitle needs matplotlib >= 3.8
    return sup.get_text() if sup is not None else ""


def _names(rec: ClaimRecord, title: str) -> bool:
    return re.search(rf"(^|\s){re.escape(rec.id)}\s+{rec.verdict}\b", title) is not None


def _line_labels(fig) -> list[str]:
    return [line.get_label() for ax in fig.axes for line in ax.get_lines()]


def _legend_texts(fig) -> list[str]:
    return [
        t.get_text()
        for ax in fig.axes
        for leg in [ax.get_legend()]
        if leg is not None
        for t in leg.get_texts()
    ]


def test_every_first_round_claim_is_covered():
    assert len(FIRST_ROUND) == 13
    assert {"C1", "C12", "EXT-PP"} <= set(FIRST_ROUND)
    for cid in FIRST_ROUND:
        assert callable(getattr(load_check(cid), "figure", None)), f"{cid} has no figure()"


@pytest.mark.parametrize("claim_id", FIRST_ROUND)
def test_figure_has_title_floor_and_saves(claim_id, records, tmp_path):
    rec = records(claim_id)
    assert rec.passed, rec.explain()  # the quick checks pass: a PASS figure
    fig = load_check(claim_id).figure(rec)
    assert fig is not None
    title = _title(fig)
    assert title.strip() and _names(rec, title), title
    paths = save(fig, tmp_path / f"{claim_id}.png")
    assert paths[0].read_bytes()[:8] == PNG
    if claim_id not in WITHOUT_ERRORS:
        labels = _line_labels(fig)
        assert any(label.startswith("float floor") for label in labels), labels


def test_c8_legend_states_the_pass_band_not_the_ci(records):
    rec = records("C8")
    texts = _legend_texts(load_check("C8").figure(rec))
    assert any("pass band" in t for t in texts), texts
    if rec.passed:
        assert not [t for t in texts if "outside" in t], texts


def test_c9_shows_the_golden_ratio_and_e_next_against_e(records):
    fig = load_check("C9").figure(records("C9"))
    assert len(fig.axes) == 2
    texts = _legend_texts(fig)
    assert any("golden ratio" in t and "1.618" in t for t in texts), texts
    assert any("fitted order" in t for t in texts), texts
    right = fig.axes[1]
    assert right.get_xscale() == right.get_yscale() == "log"
    assert "e_{t+1}" in right.get_ylabel() and "e_t" in right.get_xlabel()


@pytest.mark.parametrize("claim_id", FIRST_ROUND)
def test_a_failed_record_is_titled_fail(claim_id, records):
    rec = dataclasses.replace(records(claim_id), passed=False)
    title = _title(load_check(claim_id).figure(rec))
    assert _names(rec, title) and "PASS" not in title, title


def test_a_real_failure_is_drawn_and_titled_fail(tmp_path):
    """C9 with a rank-1 compressed Hessian in place of the stale one (the mutation of
    tests/test_claims_mutations.py): the order falls below 1.5 and the figure says FAIL."""
    c9 = load_check("C9")
    rec = c9.check(
        quick=True, method_factory=lambda **kw: c9.fednl_factory(compressor="rankR", R=1, **kw)
    )
    assert not rec.passed
    fig = c9.figure(rec)
    title = _title(fig)
    assert _names(rec, title) and "PASS" not in title, title
    assert any("not in the pass band" in t for t in _legend_texts(fig))
    assert save(fig, tmp_path / "C9_fail.png")[0].read_bytes()[:8] == PNG


def test_a_check_that_raised_gets_an_error_figure():
    module = load_check("C2")
    rec = record(
        "C2",
        module.STATEMENT,
        module.SOURCE,
        time.perf_counter(),
        measured="error",
        predicted="-",
        passed=False,
        details={"error": "RuntimeError: boom", "traceback": "Traceback ...\nboom"},
    )
    fig = module.figure(rec)
    assert fig is not None and _names(rec, _title(fig))
    assert "boom" in " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_a_record_the_figure_cannot_read_gets_a_text_figure():
    rec = dataclasses.replace(
        ClaimRecord(
            id="C3", statement="", source="", measured="m", predicted="p", interval="", passed=False
        ),
        details={"runs": "not a list of runs"},
    )
    with pytest.warns(RuntimeWarning, match="could not be drawn"):
        fig = load_check("C3").figure(rec)
    assert _names(rec, _title(fig))


def test_the_fallback_draws_nothing():
    rec = ClaimRecord(
        id="X99", statement="", source="", measured="", predicted="", interval="", passed=True
    )
    assert claim_figure(rec) is None
