"""Every second-round claim check can fail: a deliberately broken method or prediction, injected
through the check's arguments (no global is patched), makes C13-C16 FAIL with a reason.

Each break is the smallest change the claim is about: the drift-floor law predicted with the
global Hessian H instead of the local H_i, or measured on a method without a floor (C13); a
server without memory (C14); GIANT with local gradients, i.e. simple mixing (C15); FedPM with
the exact Hessian where the FOOF covariance is claimed (C16).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedtheory.claims import (
    assert_claim_fails,
    fedpm_factory,
)
from fedtheory.linalg import spd_solve
from fedtheory.methods.base import RoundInfo
from fedtheory.methods.giant import GIANT, GIANTState

_fails = assert_claim_fails


def global_hessian_floor(problem) -> np.ndarray:
    """The law with H(theta*) in place of every H_i(theta*): -H^{-1} sum_i w_i g_i(theta*),
    which is zero since sum_i w_i g_i(theta*) = 0."""
    star = np.asarray(problem.reference.theta_star)
    o = problem.global_oracle(star, hess=True)
    return -spd_solve(np.asarray(o.H), np.asarray(o.g))


def test_the_law_needs_the_local_hessians_c13():
    rec = _fails("C13", predictor=global_hessian_floor)
    assert rec.details["max_rel_error_judged"] > 0.9


def test_the_law_needs_a_method_with_a_floor_c13():
    rec = _fails("C13", method_factory=fedpm_factory)
    assert rec.details["failures"]


def test_a_memoryless_server_has_a_floor_under_partial_participation_c14():
    rec = _fails("C14", method_factory=fedpm_factory)
    assert any("not every run reached" in f for f in rec.details["failures"])


@dataclass(frozen=True)
class LocalGradientGIANT(GIANT):
    """GIANT whose clients precondition their LOCAL gradient, p = sum w_i H_i^{-1} g_i: SOPM with
    K = 1 (no line search, the step is eta)."""

    def round(self, ctx, state):
        o = ctx.eval(state.theta, grad=True, hess=True)
        p = ctx.mix(spd_solve(o.H, o.g, labels=ctx.labels))
        d, m = ctx.problem.d, ctx.m
        info = RoundInfo(uplink=m * d, downlink=m * d, grad_evals=m, hess_evals=m)
        return GIANTState(state.theta - self.eta * p, self.eta), info


def test_giant_with_local_gradients_has_a_floor_c15():
    rec = _fails("C15", method_factory=lambda **kw: LocalGradientGIANT(**kw))
    assert all(not r["reached"] for r in rec.details["runs"])


def test_the_exact_hessian_is_not_the_foof_rate_c16():
    rec = _fails("C16", method_factory=fedpm_factory)
    assert all(not r["passed"] for r in rec.details["runs"])
