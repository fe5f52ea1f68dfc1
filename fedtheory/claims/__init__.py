"""Claims as executable checks: the record, the registry, the ``fedtheory check`` command.

Each claim of ``docs/claims.md`` is one module of the top-level ``proofs_checks/`` folder
(``c01_fedpm_is_newton.py``, ..., ``ext_partial_participation.py``; shipped inside the wheel as
``fedtheory/_checks``). A check module defines ``CLAIM_ID``, ``STATEMENT``, ``SOURCE``, a
function ``check(quick: bool, ...) -> ClaimRecord`` and one pytest test ``test_claim``.
``quick=True`` runs the protocol at CI size; ``quick=False`` the full protocol.

A :class:`ClaimRecord` carries the measured figure next to the predicted one and the verdict of
the pass criterion of docs/claims.md, never a loosened one. The package's parts:

- :mod:`.record`: :class:`ClaimRecord` and :func:`record`;
- :mod:`.checks`: the registry of check modules (:func:`registry`, :func:`claim_ids`,
  :func:`load_check`, :func:`resolve_ids`);
- :mod:`.protocol`: helpers the checks share (one round of a method at a chosen point, the
  limit of a round map, heterogeneous problems built from a data set, :func:`assert_claim`);
- :mod:`.report`: the table, the Markdown report, CSV and LaTeX tables, the figures;
- :mod:`.command`: :func:`run_claim` and :func:`main_check` (``fedtheory check``).

The command::

    fedtheory check [--claim ID ...] [--quick] [--json FILE] [--report FILE.md]
                    [--problem PROBLEM] [--csv FILE] [--latex FILE] [--backend numpy|cupy]

is :func:`main_check`: one table row per claim, exit code 1 if any claim fails.
"""

from .checks import (
    accepts_problem,
    checks_dir,
    claim_ids,
    load_check,
    registry,
    resolve_ids,
    runs_on_gpu,
)
from .command import main_check, run_claim
from .protocol import (
    Limit,
    MethodFactory,
    assert_claim,
    assert_claim_fails,
    claim_backend,
    fedpm_factory,
    heterogeneous_problem,
    limit_point,
    load_problem,
    local_newton_residual,
    on_backend,
    one_round,
    scale_of,
    single_threaded_blas,
    sopm_factory,
    sopm_limit,
)
from .record import ClaimRecord, fmt_ci, jsonable, record
from .report import (
    claim_table,
    claim_table_latex,
    render_report,
    table_header,
    table_row,
    write_figures,
)

__all__ = [
    "ClaimRecord",
    "Limit",
    "MethodFactory",
    "accepts_problem",
    "assert_claim",
    "assert_claim_fails",
    "claim_backend",
    "load_problem",
    "on_backend",
    "runs_on_gpu",
    "checks_dir",
    "claim_ids",
    "claim_table",
    "claim_table_latex",
    "fedpm_factory",
    "fmt_ci",
    "heterogeneous_problem",
    "jsonable",
    "limit_point",
    "load_check",
    "local_newton_residual",
    "main_check",
    "one_round",
    "record",
    "registry",
    "render_report",
    "resolve_ids",
    "run_claim",
    "scale_of",
    "single_threaded_blas",
    "sopm_factory",
    "sopm_limit",
    "table_header",
    "table_row",
    "write_figures",
]
