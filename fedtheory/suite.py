"""Problems as data: TOML specs in ``problems/`` (the suite) or any user file.

A spec has three tables and two keys::

    name = "a9a_fednl"
    description = "a9a, FedNL split: 80 clients x 407 rows in file order"
    [data]        # source = a9a | phishing | breast_cancer | diabetes | libsvm |
                  #          fedprox_synthetic | heterogeneous_quadratic, plus the loader's options
    source = "a9a"
    rows = 32560
    storage = "auto"      # optional: auto | dense | sparse (sparse at <= 20 % non-zeros)
    [partition]   # kind = iid | contiguous | sorted | dirichlet (not for the synthetic
    kind = "contiguous"   # generators, whose data come partitioned)
    clients = 80
    [objective]   # kind = logistic | ridge, lam >= 0, weighting = samples | uniform
    kind = "logistic"
    lam = 1e-3

``source = "libsvm"`` reads ``path`` (relative to the TOML file's folder, or absolute), so any
LIBSVM dataset works the same way. Its options: ``rows``, ``intercept``, ``n_features``,
``task`` ("classification": labels -1/+1 or 0/1; "regression": real targets; by default
"regression" when ``[objective] kind = "ridge"`` and "classification" otherwise) and
``zero_based`` (true for 0-based indices, as scikit-learn's ``dump_svmlight_file`` writes).
Unknown keys, and values of the wrong type (a string for a
number, true for an integer, nan or inf, a negative integer), are errors naming the key and the
file. Specs are data only: nothing in them is evaluated.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import data as datasets
from .errors import FedTheoryError, check, out_of_memory
from .partitions import make_partition, quantile_bins
from .problem import FederatedProblem
from .validate import check_choice, check_int, check_kinds, check_table_keys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_PROBLEM = "a9a_fednl"

# source -> (loader, options it accepts, whether it comes partitioned)
_SOURCES: dict[str, tuple[Callable[..., Any], tuple[str, ...], bool]] = {
    "a9a": (datasets.load_a9a, ("rows", "intercept"), False),
    "phishing": (datasets.load_phishing, ("rows", "intercept"), False),
    "breast_cancer": (datasets.load_breast_cancer, ("standardize", "intercept"), False),
    "diabetes": (datasets.load_diabetes, ("standardize", "intercept"), False),
    "libsvm": (
        datasets.read_libsvm,
        ("path", "rows", "intercept", "n_features", "task", "zero_based"),
        False,
    ),
    "fedprox_synthetic": (
        datasets.fedprox_synthetic,
        ("alpha", "beta", "clients", "d", "sizes", "mean_size", "seed"),
        True,
    ),
    "heterogeneous_quadratic": (
        datasets.heterogeneous_quadratic,
        ("clients", "d", "n_per_client", "mu", "L", "spread", "noise", "seed"),
        True,
    ),
}
_TOP_KEYS = ("name", "description", "data", "partition", "objective")
_PARTITION_KEYS = ("kind", "clients", "seed", "alpha", "min_size", "max_tries", "bins")
_OBJECTIVE_KEYS = ("kind", "lam", "weighting")

# What each key may hold (kinds of fedtheory.validate.KINDS), checked when a spec is read so
# that a wrong value is named with its file and key before any loader sees it. Numbers must be
# finite, integers >= 0 (no spec size, seed or count is negative), and true/false is neither.
_STR, _BOOL, _COUNT, _NUM, _COUNTS = (
    "a string",
    "true or false",
    "an integer >= 0",
    "a finite number",
    "a list of integers >= 0",
)
_TYPES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        ("name", "description", "source", "path", "task", "kind", "weighting", "storage"), (_STR,)
    ),
    **dict.fromkeys(("intercept", "standardize", "zero_based"), (_BOOL,)),
    **dict.fromkeys(
        (
            "rows",
            "n_features",
            "clients",
            "d",
            "mean_size",
            "seed",
            "min_size",
            "max_tries",
            "bins",
        ),
        (_COUNT,),
    ),
    **dict.fromkeys(("alpha", "beta", "mu", "L", "spread", "noise", "lam"), (_NUM,)),
    "n_per_client": (_COUNT, _COUNTS),
    "sizes": (_STR, _COUNTS),
}


def suite_dir() -> Path:
    """The folder of the suite's TOML files: inside the installed package, or the source
    tree's ``problems/`` when running from a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_suite", here.parent / "problems"):
        if candidate.is_dir():
            return candidate
    raise FedTheoryError(
        f"the problem suite is missing (looked in {here / '_suite'} and "
        f"{here.parent / 'problems'}); reinstall fedtheory"
    )


def list_problems() -> list[tuple[str, str]]:
    """(name, description) of every problem of the suite, sorted by name."""
    out = []
    for path in sorted(suite_dir().glob("*.toml")):
        spec = read_spec(path)
        out.append((spec["name"], spec.get("description", "")))
    return out


def resolve(problem: str | Path) -> Path:
    """A TOML path, or the suite file of a problem name."""
    path = Path(problem)
    if path.suffix == ".toml":
        check(path.is_file(), f"problem file {str(path)!r} does not exist")
        return path
    path = suite_dir() / f"{problem}.toml"
    if not path.is_file():
        names = ", ".join(n for n, _ in list_problems())
        raise FedTheoryError(
            f"unknown problem {str(problem)!r}; the suite has: {names} "
            f"(or pass a path to a .toml file)"
        )
    return path


def read_spec(path: str | Path) -> dict[str, Any]:
    """Parse and validate one TOML spec; errors name the file and the bad key or value."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise FedTheoryError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise FedTheoryError(f"{path}: malformed TOML: {exc}") from None
    except OSError as exc:
        raise FedTheoryError(f"{path}: cannot read: {exc.strerror}") from None
    check_table_keys(spec, _TOP_KEYS, path, "top level")
    check_kinds(spec, _TYPES, f"{path}: top level")
    spec.setdefault("name", path.stem)
    for table in ("data", "partition", "objective"):
        if table in spec:
            check(
                isinstance(spec[table], dict),
                f"{path}: {table} must be a [{table}] table, got {spec[table]!r}",
            )
    for table in ("data", "objective"):
        check(isinstance(spec.get(table), dict), f"{path}: the [{table}] table is missing")
    src = spec["data"].get("source")
    check_choice(src, f"{path}: [data] source", _SOURCES, joined=True)
    loader, options, partitioned = _SOURCES[src]
    check_table_keys(spec["data"], ("source", "storage", *options), path, "[data]")
    if partitioned:
        check(
            "partition" not in spec,
            f"{path}: source {src!r} comes partitioned; remove the [partition] table",
        )
    else:
        check(isinstance(spec.get("partition"), dict), f"{path}: the [partition] table is missing")
        check_table_keys(spec["partition"], _PARTITION_KEYS, path, "[partition]")
    check_table_keys(spec["objective"], _OBJECTIVE_KEYS, path, "[objective]")
    for table in ("data", "partition", "objective"):
        check_kinds(spec.get(table, {}), _TYPES, f"{path}: [{table}]")
    spec["_dir"], spec["_path"] = str(path.resolve().parent), str(path)
    return spec


def spec_hash(spec: dict[str, Any]) -> str:
    """A short stable hash of a spec's content (for provenance and caching). For a user's
    LIBSVM file it covers the file's bytes too, so editing the data changes the hash."""
    public = {k: v for k, v in spec.items() if not k.startswith("_")}
    data = spec.get("data", {})
    if isinstance(data, dict) and data.get("source") == "libsvm" and "path" in data:
        path = Path(str(data["path"])).expanduser()
        if not path.is_absolute():
            path = Path(spec.get("_dir", ".")) / path
        if path.is_file():
            public["data_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    blob = json.dumps(public, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


_CACHE: dict[str, FederatedProblem] = {}


def load_problem(problem: str | Path | dict[str, Any]) -> FederatedProblem:
    """The FederatedProblem of a suite name, a TOML path or an already-read spec.

    Problems are cached per spec content within the process, so their reference solution is
    computed once.
    """
    spec = problem if isinstance(problem, dict) else read_spec(resolve(problem))
    key = spec_hash(spec) + spec.get("_dir", "")
    if key not in _CACHE:
        _CACHE[key] = build_problem(spec)
    return _CACHE[key]


def build_problem(spec: dict[str, Any]) -> FederatedProblem:
    """Build a problem from a validated spec (see :func:`read_spec`).

    Every failure is a :class:`FedTheoryError` that starts with the spec's file (its name for a
    spec made in code): the values a loader, partition or objective refuses come from there. A
    numpy or memory error of a loader (a size too large for this machine) is reported the same
    way, chained to the original exception.
    """
    where = spec.get("_path", spec["name"])
    spec = {**spec, "_hash": spec.get("_hash") or spec_hash(spec)}  # the problem carries it
    try:
        return _build_problem(spec)
    except FedTheoryError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    except (TypeError, ValueError, OverflowError, MemoryError) as exc:
        what = "not enough memory" if out_of_memory(exc) else type(exc).__name__
        raise FedTheoryError(f"{where}: {what}: {exc}") from exc


def _build_problem(spec: dict[str, Any]) -> FederatedProblem:
    data_opts = dict(spec["data"])
    src = data_opts.pop("source")
    storage = data_opts.pop("storage", "auto")
    loader, _, partitioned = _SOURCES[src]
    if src == "libsvm":
        check("path" in data_opts, "[data] source 'libsvm' needs a path")
        p = Path(data_opts["path"]).expanduser()
        data_opts["path"] = p if p.is_absolute() else Path(spec.get("_dir", ".")) / p
        # without task, a ridge objective reads real targets, a logistic one class labels
        ridge = spec["objective"].get("kind") == "ridge"
        data_opts.setdefault("task", "regression" if ridge else "classification")
    if "clients" in data_opts:
        data_opts["n_clients"] = data_opts.pop("clients")
    try:
        out = loader(**data_opts)
    except FedTheoryError as exc:
        raise FedTheoryError(f"[data]: {exc}") from None
    if partitioned:
        ds, parts = out
    else:
        ds = out
        opts = dict(spec["partition"])
        kind = opts.pop("kind", None)
        n_clients = opts.pop("clients", None)
        check_int(n_clients, "[partition] clients", None)
        bins = opts.pop("bins", 4)
        # label skew needs labels: regression targets are binned into quantiles first
        labels = quantile_bins(ds.y, k=bins) if ds.task == "regression" else ds.y
        try:
            parts = make_partition(kind, n=ds.n, y=labels, n_clients=n_clients, **opts)
        except FedTheoryError as exc:
            raise FedTheoryError(f"[partition]: {exc}") from None
    obj = spec["objective"]
    kind = obj.get("kind")
    check(
        kind in ("logistic", "ridge"),
        f"[objective] kind must be 'logistic' or 'ridge', got {kind!r}",
    )
    check(
        not (kind == "logistic" and ds.task != "classification"),
        f"a logistic objective needs a classification dataset, got {ds.name} ({ds.task})",
    )
    return FederatedProblem.from_dataset(
        ds.X,
        ds.y,
        parts,
        objective=kind,
        lam=obj.get("lam", 0.0),
        weighting=obj.get("weighting", "samples"),
        name=spec["name"],
        spec=spec,
        storage=storage,
    )
