"""Shared test configuration: Hypothesis profiles and fixtures.

Environment: see below. Profiles: ``ci`` (derandomised, fixed example budget: the CI run is
reproducible) is loaded when the environment variable CI is set; ``dev`` otherwise.
``HYPOTHESIS_PROFILE`` overrides.
"""

from __future__ import annotations

import os

# Notebooks run by nbmake (in kernels that inherit this environment) use their small sizes,
# and every process of the test run uses one BLAS thread: results do not depend on how a
# multi-threaded BLAS splits its reductions, and tests do not fight over the cores.
os.environ.setdefault("FEDTHEORY_SMALL", "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev", deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_configure(config):
    """Execute the notebooks (through nbmake) whenever nbmake is installed."""
    if config.pluginmanager.hasplugin("nbmake") and hasattr(config.option, "nbmake"):
        config.option.nbmake = True


@pytest.fixture(scope="session")
def a9a():
    from fedtheory.suite import load_problem

    return load_problem("a9a_fednl")


def _gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver or no device: the GPU tests skip
        return False


@pytest.fixture
def cupy_gpu():
    """CuPy, for a test that needs a GPU; the test skips where CuPy or a GPU is missing."""
    if not _gpu_available():
        pytest.skip("no CUDA GPU with CuPy on this machine")
    import cupy

    return cupy


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def backend(request):
    """Parametrises a test over NumPy and, where a GPU and CuPy exist, CuPy."""
    if request.param == "cupy" and not _gpu_available():
        pytest.skip("no CUDA GPU with CuPy on this machine")
    return request.param
