"""``fedtheory check --backend cupy`` on a GPU: the checks' problems live on the device and
the claims still pass there (skipped without CuPy and a GPU)."""

from __future__ import annotations

import pytest

from fedtheory import claims
from fedtheory.claims import protocol

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_gpu():
    from conftest import _gpu_available

    if not _gpu_available():
        pytest.skip("no CUDA GPU with CuPy on this machine")


@pytest.mark.parametrize("claim_id", ["C3", "C6", "C9"])
def test_a_claim_passes_with_its_problems_on_the_gpu(claim_id, monkeypatch):
    seen: list[str] = []
    real = protocol.on_backend

    def recording(problem):
        out = real(problem)
        seen.append(type(out.y).__module__.split(".")[0])
        return out

    monkeypatch.setattr(protocol, "on_backend", recording)
    rec = claims.run_claim(claim_id, quick=True, backend="cupy")
    assert rec.passed, rec.explain()
    assert seen and set(seen) == {"cupy"}, seen
