"""C17 can fail: a deliberately broken FedNL-PP, injected through the check's
``method_factory`` (no global is patched), makes the claim FAIL with a reason.

- the server averages g~_i over the round's participants only (not over all n stored states):
  theta* is no longer a fixed point, the runs stall above 1e-10;
- every client refreshes every round whatever tau is (the participants are ignored): the
  rounds no longer fall with tau.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedtheory.claims import assert_claim_fails
from fedtheory.methods import round_context
from fedtheory.methods.fednl_family import FedNLPP


@dataclass(frozen=True)
class ParticipantsOnlyFedNLPP(FedNLPP):
    """FedNL-PP whose server step uses g~ = sum over the participants of w~_i g~_i (their
    stored values) instead of sum over all n clients of w_i g~_i."""

    def round(self, ctx, state):
        if ctx.clients is not None:
            g_tilde = state.g_tilde.copy()
            g_tilde[:] = ctx.mix(state.g_tilde[ctx.clients])
            state = state._replace(g_tilde=g_tilde)
        return super().round(ctx, state)


@dataclass(frozen=True)
class EveryoneFedNLPP(FedNLPP):
    """FedNL-PP that refreshes every client every round, ignoring the participants."""

    def round(self, ctx, state):
        return super().round(round_context(ctx.problem, rng=ctx.rng, oracle=ctx.oracle), state)


_fails = assert_claim_fails


def _factory(cls):
    """Builds the broken class as C17's own factory builds FedNL-PP."""
    return lambda **params: cls(**{"alpha": "one", "init": "hessian", **params})


def test_participants_only_gradient_loses_the_fixed_point_c17():
    rec = _fails("C17", method_factory=_factory(ParticipantsOnlyFedNLPP))
    res = rec.details["compressors"]["identity"]
    assert not res["all_reached"]
    stalled = [
        r["final_rel_dist"]
        for t in res["per_tau"]
        if t["tau"] < rec.details["n"]
        for r in t["runs"]
    ]
    assert min(stalled) > 1e-10
    assert any("not every run reached" in f for f in rec.details["failures"])


def test_ignoring_tau_removes_the_improvement_with_tau_c17():
    rec = _fails("C17", method_factory=_factory(EveryoneFedNLPP))
    assert all(res["all_reached"] for res in rec.details["compressors"].values())
    assert any("not decreasing in tau" in f for f in rec.details["failures"])
