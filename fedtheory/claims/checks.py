"""The claim checks: one module per claim in ``proofs_checks/`` (shipped as ``fedtheory/_checks``),
found, loaded and ordered here."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from types import ModuleType

from ..errors import FedTheoryError, check


def checks_dir() -> Path:
    """The folder of the check modules: inside the installed package (``fedtheory/_checks``),
    or the source tree's ``proofs_checks/`` when running from a checkout."""
    here = Path(__file__).resolve().parents[1]  # the fedtheory package folder
    for candidate in (here / "_checks", here.parent / "proofs_checks"):
        if candidate.is_dir():
            return candidate
    raise FedTheoryError(
        f"the claim checks are missing (looked in {here / '_checks'} and "
        f"{here.parent / 'proofs_checks'}); reinstall fedtheory"
    )


def _load_module(path: Path) -> ModuleType:
    name = f"fedtheory_checks_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _claim_order(claim_id: str) -> tuple[int, int, str]:
    if claim_id[:1] == "C" and claim_id[1:].isdigit():
        return (0, int(claim_id[1:]), claim_id)
    return (1, 0, claim_id)


@cache
def registry() -> dict[str, ModuleType]:
    """Claim id -> check module, in claim order (C1, C2, ..., C12, then the extensions).

    Discovers every ``c*.py`` and ``ext_*.py`` of :func:`checks_dir` that defines
    ``CLAIM_ID`` and ``check``.
    """
    folder = checks_dir()
    found: dict[str, ModuleType] = {}
    for path in sorted([*folder.glob("c*.py"), *folder.glob("ext_*.py")]):
        module = _load_module(path)
        claim_id = getattr(module, "CLAIM_ID", None)
        if claim_id is None or not callable(getattr(module, "check", None)):
            continue
        if claim_id in found:
            raise FedTheoryError(
                f"claim {claim_id} is defined twice: in {path.name} and "
                f"{Path(found[claim_id].__file__).name}"
            )
        found[claim_id] = module
    return dict(sorted(found.items(), key=lambda kv: _claim_order(kv[0])))


def claim_ids() -> list[str]:
    return list(registry())


def load_check(claim_id: str) -> ModuleType:
    """The check module of ``claim_id`` (case-insensitive)."""
    return registry()[resolve_ids([claim_id])[0]]


def resolve_ids(claims: Sequence[str] | None) -> list[str]:
    """Canonical ids of ``claims`` (all of them when None or empty), in the order given.

    Unknown ids raise :class:`FedTheoryError` naming them and the known ids.
    """
    known = claim_ids()
    if not claims:
        return known
    by_upper = {c.upper(): c for c in known}
    unknown = [c for c in claims if c.strip().upper() not in by_upper]
    check(
        not unknown,
        f"unknown claim id{'s' if len(unknown) > 1 else ''} "
        f"{', '.join(map(repr, unknown))}; known claims: {', '.join(known)}",
    )
    out: list[str] = []
    for c in claims:
        cid = by_upper[c.strip().upper()]
        if cid not in out:
            out.append(cid)
    return out


def accepts_problem(module: ModuleType) -> bool:
    """Whether a check can run its protocol on a user's problem (``check(..., on=[...])``)."""
    import inspect

    return "on" in inspect.signature(module.check).parameters


def runs_on_gpu(module: ModuleType) -> bool:
    """Whether a check's protocol can run its problems on CuPy (``fedtheory check --backend
    cupy``): every check except those that set ``GPU = False`` (with ``GPU_WHY``, the reason:
    exact rational arithmetic, ball arithmetic, host-built Hypothesis problems)."""
    return bool(getattr(module, "GPU", True))
