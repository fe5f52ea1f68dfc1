"""fedtheory.validate: every shared check, at its boundaries, with the exact message shape."""

import math
import re

import numpy as np
import pytest

from fedtheory.errors import FedTheoryError
from fedtheory.validate import (
    KINDS,
    MAX_K,
    check_bool,
    check_choice,
    check_count,
    check_eta,
    check_int,
    check_K,
    check_keys,
    check_kinds,
    check_min,
    check_nonneg,
    check_open_unit,
    check_options,
    check_seed,
    check_table_keys,
    check_unit,
    coerce,
    coerce_params,
    is_int,
    is_number,
    is_real,
    number_or,
)

NAN, INF = float("nan"), float("inf")


def refused(message: str):
    """pytest.raises for a FedTheoryError whose message is exactly ``message``."""
    return pytest.raises(FedTheoryError, match=f"^{re.escape(message)}$")


# ---- predicates ----------------------------------------------------------------------------
@pytest.mark.parametrize("x", [0, -3, 7, np.int64(2), np.int32(-1)])
def test_is_int_accepts_integers(x):
    assert is_int(x)


@pytest.mark.parametrize("x", [True, False, 1.0, np.float64(1.0), "1", None, [1]])
def test_is_int_refuses_bools_floats_and_others(x):
    assert not is_int(x)


def test_is_number_and_is_real():
    for x in (0, 1.5, np.int64(3), np.float32(0.5)):
        assert is_number(x) and is_real(x)
    for x in (NAN, INF, -INF, np.float64("nan")):
        assert is_number(x) and not is_real(x)
    for x in (True, "1", None, 1j):
        assert not is_number(x) and not is_real(x)


# ---- integers ------------------------------------------------------------------------------
def test_check_int_lower_bound():
    check_int(0, "seed", 0)
    check_int(np.int64(0), "seed", 0)
    with refused("seed must be an integer >= 0, got -1"):
        check_int(-1, "seed", 0)
    with refused("seed must be an integer >= 0, got True"):
        check_int(True, "seed", 0)
    with refused("seed must be an integer >= 0, got 1.0"):
        check_int(1.0, "seed", 0)


def test_check_int_range_note_and_span():
    check_int(1, "participation S", 1, 20, note=" (N = 20)")
    check_int(20, "participation S", 1, 20, note=" (N = 20)")
    for bad in (0, 21):
        with refused(f"participation S must be an integer in 1..20 (N = 20), got {bad}"):
            check_int(bad, "participation S", 1, 20, note=" (N = 20)")
    with refused("n must be an integer in 1..1,000, got 1001"):
        check_int(1001, "n", 1, 1000, span="1..1,000")


def test_check_int_any_integer_and_note():
    check_int(-5, "[partition] clients", None)
    with refused("[partition] clients must be an integer, got '4'"):
        check_int("4", "[partition] clients", None)
    with refused("threads must be an integer >= 1 or None, got 0"):
        check_int(0, "threads", 1, note=" or None")


def test_check_count():
    check_count(1, "R")
    with refused("R must be an integer >= 1, got 0"):
        check_count(0, "R")
    with refused("R must be an integer >= 1, got False"):
        check_count(False, "R")
    with refused("R must be an integer >= 1, got nan"):
        check_count(NAN, "R")


def test_check_seed_returns_a_python_int():
    assert check_seed(np.int64(3)) == 3 and type(check_seed(np.int64(3))) is int
    assert check_seed(0) == 0
    with refused("seed must be an integer >= 0, got -1"):
        check_seed(-1)
    with refused("--seed must be an integer >= 0, got True"):
        check_seed(True, "--seed")


def test_check_K():
    check_K(1)
    check_K(MAX_K)
    for bad in (0, MAX_K + 1, True, 2.0):
        with refused(
            f"K must be an integer in 1..100,000 (each local step is a Hessian solve "
            f"per client), got {bad!r}"
        ):
            check_K(bad)


# ---- numbers without a type check --------------------------------------------------------
def test_check_min():
    check_min(1, "n_clients", 1)
    with refused("n_clients must be >= 1, got 0"):
        check_min(0, "n_clients", 1)
    check_min(0.5, "alpha", 0, strict=True)
    with refused("alpha must be > 0, got 0"):
        check_min(0, "alpha", 0, strict=True)
    with refused("alpha must be > 0, got nan"):
        check_min(NAN, "alpha", 0, strict=True)
    with refused("rows must be >= 1 or None, got 0"):
        check_min(0, "rows", 1, note=" or None")
    with refused(f"target must be > 0, got {np.float64(0.0)!r}"):  # show=repr
        check_min(np.float64(0.0), "target", 0, strict=True, show=repr)


# ---- finite numbers ------------------------------------------------------------------------
def test_check_eta():
    check_eta(1e-300)
    check_eta(np.float64(2.0), "mu")
    for bad in (0, -1.0, NAN, INF, True, "1"):
        with refused(f"eta must be a finite number > 0, got {bad!r}"):
            check_eta(bad)


def test_check_nonneg():
    check_nonneg(0, "lam")
    check_nonneg(0.0, "lam")
    check_nonneg(np.int64(0), "lam")
    for bad in (-1e-300, NAN, INF, True, None):
        with refused(f"lam must be a finite number >= 0, got {bad!r}"):
            check_nonneg(bad, "lam")


def test_check_unit():
    check_unit(0, "beta", closed=True)
    check_unit(1, "beta", closed=True)
    check_unit(0.999, "beta", closed=False)
    with refused("beta must be a number in [0, 1), got 1"):
        check_unit(1, "beta", closed=False)
    with refused("beta must be a number in [0, 1], got 1.0001"):
        check_unit(1.0001, "beta", closed=True)
    with refused("beta must be a number in [0, 1], got -0.1"):
        check_unit(-0.1, "beta", closed=True)
    with refused("beta must be a number in [0, 1], got True"):
        check_unit(True, "beta", closed=True)
    with refused("beta must be a number in [0, 1], got nan"):
        check_unit(NAN, "beta", closed=True)


def test_check_open_unit():
    check_open_unit(1e-12, "p")
    check_open_unit(1 - 1e-12, "p")
    for bad in (0, 1, 0.0, 1.0, NAN, True):
        with refused(f"p must be a number in (0, 1), got {bad!r}"):
            check_open_unit(bad, "p")


def test_check_bool():
    check_bool(True, "x")
    check_bool(False, "x")
    with refused("x must be True or False, got 1"):
        check_bool(1, "x")
    with refused("f.toml: drift_metrics must be true or false, got 'yes'"):
        check_bool("yes", "f.toml: drift_metrics", toml=True)


# ---- choices and keys ----------------------------------------------------------------------
def test_check_choice():
    check_choice("a", "mode", ("a", "b"))
    with refused("mode must be one of ('a', 'b'), got 'c'"):
        check_choice("c", "mode", ("a", "b"))
    with refused("mode must be one of ['a', 'b'], got None"):
        check_choice(None, "mode", ["a", "b"])
    with refused("executor must be one of local, dask, got 'ray'"):
        check_choice("ray", "executor", ("local", "dask"), joined=True)
    with refused("name must be one of x, y, got ['x']"):  # unhashable: refused, not TypeError
        check_choice(["x"], "name", {"x": 1, "y": 2}, joined=True)


def test_check_keys():
    check_keys(["K"], ["K", "eta"], owner="method fedpm")
    with refused("unknown parameter 'k' for method fedpm; accepted: K, eta"):
        check_keys(["K", "k"], ["K", "eta"], owner="method fedpm")
    with refused("unknown parameter 'K' for method newton; accepted: none"):
        check_keys(["K"], [], owner="method newton")
    with refused("parameter 'H_init' of method fednl is now called 'init': pass init=... instead"):
        check_keys(["H_init"], ["init"], owner="method fednl", renamed={"H_init": "init"})


def test_check_table_keys():
    check_table_keys({"kind": 1}, ("kind", "lam"), "p.toml", "[objective]")
    with refused("p.toml: unknown key 'lambda' in [objective]; accepted: kind, lam"):
        check_table_keys({"lambda": 1}, ("kind", "lam"), "p.toml", "[objective]")


def test_check_options():
    check_options({}, (), owner="oracle 'exact'")
    with refused("unknown option(s) ['a', 'z'] for oracle 'exact'; accepted: none"):
        check_options({"z": 1, "a": 2}, (), owner="oracle 'exact'")
    with refused(
        "unknown option(s) ['beta'] for partition 'dirichlet'; accepted: ['alpha', 'min_size']"
    ):
        check_options(
            {"beta": 1}, ("alpha", "min_size"), owner="partition 'dirichlet'", listed=True
        )


def test_check_kinds():
    kinds = {
        "rows": ("an integer >= 0",),
        "lam": ("a finite number",),
        "sizes": ("a string", "a list of integers >= 0"),
        "flag": ("true or false",),
    }
    check_kinds(
        {"rows": 0, "lam": -1.5, "sizes": [0, 3], "flag": False, "other": None},
        kinds,
        "p.toml: [data]",
    )
    check_kinds({"sizes": "powerlaw"}, kinds, "w")
    for key, bad, what in (
        ("rows", -1, "an integer >= 0"),
        ("rows", True, "an integer >= 0"),
        ("rows", 1.0, "an integer >= 0"),
        ("lam", NAN, "a finite number"),
        ("lam", INF, "a finite number"),
        ("lam", False, "a finite number"),
        ("flag", 1, "true or false"),
        ("sizes", [], "a string or a list of integers >= 0"),
        ("sizes", [1, -1], "a string or a list of integers >= 0"),
    ):
        with refused(f"p.toml: [data] {key} must be {what}, got {bad!r}"):
            check_kinds({key: bad}, kinds, "p.toml: [data]")
    assert set(KINDS) == {
        "a string",
        "true or false",
        "an integer >= 0",
        "a finite number",
        "a list of integers >= 0",
    }


# ---- strings to values ---------------------------------------------------------------------
def test_coerce():
    assert coerce("K", "3", 1) == 3
    assert coerce("eta", "0.5", 1.0) == 0.5
    assert coerce("flag", "TRUE", False) is True and coerce("flag", "0", True) is False
    assert coerce("mode", "x", "a") == "x"
    assert math.isnan(coerce("eta", "nan", 1.0))
    with refused("parameter K must be a int, got '3.5'"):
        coerce("K", "3.5", 1)
    with refused("parameter flag must be a bool, got 'yes'"):
        coerce("flag", "yes", False)
    with refused("--oracle-param b must be a number, got 'x'"):
        coerce("b", "x", 1, label="--oracle-param b", expected="a number")


def test_coerce_params():
    assert coerce_params({"K": "2", "eta": 0.5}, {"K": 1, "eta": 1.0}, owner="method m") == {
        "K": 2,
        "eta": 0.5,
    }
    assert coerce_params(None, {"K": 1}, owner="method m") == {}
    with refused("unknown parameter 'k' for method m; accepted: K"):
        coerce_params({"k": "2"}, {"K": 1}, owner="method m")


def test_number_or():
    assert number_or("2.5", "alpha", ("auto",)) == 2.5
    assert number_or("auto", "alpha", ("auto",)) == "auto"
    assert number_or(3, "alpha", ("auto",)) == 3
    with refused("alpha must be a number or one of ('auto',), got 'fast'"):
        number_or("fast", "alpha", ("auto",))
