"""Every claim check can fail: a deliberately broken method, injected through the check's
``method_factory`` (no global is patched), makes the claim FAIL with a reason.

Each broken method is the smallest change that the claim is about: simple mixing instead of
preconditioned mixing (C1, C2, C11, C12), damping applied twice or a Levenberg-Marquardt shift
(C3, C6), preconditioned mixing where simple mixing is claimed (C4, C5), FedPAC's correction
mis-scaled (C7), a compressed Hessian in place of the stale one (C9), FedPM that ignores K
(C10), FedPM that peeks at every client under partial participation (EXT-PP).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import sympy as sp

from fedtheory.claims import (
    assert_claim_fails,
    fedpm_factory,
    load_check,
    sopm_factory,
)
from fedtheory.methods import METHODS
from fedtheory.methods.base import ServerState, round_context
from fedtheory.methods.fedpm import FedPM


@dataclass(frozen=True)
class SquaredDampingFedPM(FedPM):
    """FedPM whose server step is damped a second time: theta + eta (FedPM(theta) - theta),
    so the linear ratio is 1 - eta^2 (K = 1) instead of 1 - eta."""

    def round(self, ctx, state):
        new, info = super().round(ctx, state)
        return ServerState(state.theta + self.eta * (new.theta - state.theta)), info


@dataclass(frozen=True)
class PeekingFedPM(FedPM):
    """FedPM that ignores the round's participants and uses every client."""

    def round(self, ctx, state):
        full = round_context(ctx.problem, rng=ctx.rng, oracle=ctx.oracle)
        return super().round(full, state)


def squared_damping(**params):
    return SquaredDampingFedPM(**params)


def lm_shifted_fedpm(**params):
    return fedpm_factory(delta=1e-2, **params)


def fedpm_ignoring_K(K, eta):
    return fedpm_factory(K=1, eta=1.0)


def peeking_fedpm(**params):
    return PeekingFedPM(**params)


_fails = assert_claim_fails


def test_simple_mixing_is_not_newton_c1():
    rec = _fails("C1", method_factory=sopm_factory)
    assert rec.details["max_residual"] > 1e-3
    assert rec.details["falsifying_example"]


def test_simple_mixing_is_not_quadratic_c2():
    rec = _fails("C2", method_factory=sopm_factory)
    assert all(not r["passed"] for r in rec.details["runs"])


def test_double_damping_breaks_the_linear_ratio_c3():
    rec = _fails("C3", method_factory=squared_damping)
    assert rec.details["largest_deviation"] > 0.05


@pytest.mark.parametrize(
    "factory", [squared_damping, lm_shifted_fedpm], ids=["double-damping", "lm-shift"]
)
def test_wrong_damping_breaks_the_ridge_contraction_c6(factory):
    rec = _fails("C6", method_factory=factory)
    assert rec.details["failures"]


def test_preconditioned_mixing_has_no_drift_floor_c4():
    rec = _fails("C4", method_factory=fedpm_factory)
    assert rec.details["ridge_max_rel_error_to_local_optima_average"] > 1e-3


def test_bias_bound_needs_the_sopm_limit_c5():
    rec = _fails("C5", method_factory=fedpm_factory)
    assert rec.details["failures"]


def test_ignoring_K_removes_the_k_gt_1_bias_c10():
    rec = _fails("C10", method_factory=fedpm_ignoring_K)
    assert not rec.details["K=2"]["all_positive"]


@pytest.mark.slow
def test_simple_mixing_does_not_beat_simple_mixing_c11():
    rec = _fails("C11", fedpm_factory=sopm_factory)
    assert all(r["FedPM_round"] is None for r in rec.details["runs"])


def test_simple_mixing_breaks_the_symbolic_identities_c12():
    def simple_mixing(P, local, w):
        return sum(
            (wi * li for wi, li in zip(w, local, strict=True)), sp.zeros(local[0].shape[0], 1)
        )

    rec = _fails("C12", mixing=simple_mixing)
    assert rec.details["verdicts"]["a_fedpm_eq8"] is False
    assert rec.details["verdicts"]["e_ridge_contraction"] is False
    assert rec.details["verdicts"]["c_sup_sigma2"] is True


def test_peeking_at_every_client_removes_the_sampling_error_ext():
    rec = _fails("EXT-PP", method_factory=peeking_fedpm)
    assert rec.details["all_above_float_floor"] is False


needs_fedpac = pytest.mark.skipif("fedpac" not in METHODS, reason="FedPAC not implemented")
needs_fednl = pytest.mark.skipif("fednl" not in METHODS, reason="FedNL not implemented")


@needs_fedpac
def test_misscaled_correction_is_not_heavy_ball_c7():
    from fedtheory.methods.fedpac import FedPAC

    @dataclass(frozen=True)
    class MisscaledFedPAC(FedPAC):
        """gG = -Delta / eta instead of -Delta / (K eta)."""

        def round(self, ctx, state):
            new, info = super().round(ctx, state)
            return new._replace(gG=new.gG * self.K), info

    rec = _fails("C7", method_factory=lambda **kw: MisscaledFedPAC(**kw))
    assert max(r["max_residual"] for r in rec.details["identity"] if r["K"] == 3) > 1e-3


@needs_fednl
def test_compressed_hessian_is_not_golden_ratio_c9():
    c9 = load_check("C9")
    rec = _fails("C9", method_factory=lambda **kw: c9.fednl_factory(compressor="rankR", R=1, **kw))
    assert rec.details["runs"][0]["order"] < 1.5


@needs_fedpac
def test_peeking_at_every_client_removes_the_speedup_c8():
    from fedtheory.methods.fedpac import FedPAC

    @dataclass(frozen=True)
    class PeekingFedPAC(FedPAC):
        """FedPAC that ignores the round's participants and uses every client."""

        def round(self, ctx, state):
            full = round_context(ctx.problem, rng=ctx.rng, oracle=ctx.oracle)
            return super().round(full, state)

    rec = _fails("C8", method_factory=lambda **kw: PeekingFedPAC(**kw))
    assert not rec.details["a_fixed_eta"]["passed"]
