"""Notebook sizes: FEDTHEORY_SIZE picks small / medium / full, FEDTHEORY_SMALL=1 stays an alias
for small, and an unknown value is an error that names it."""

from __future__ import annotations

import pytest

from fedtheory import FedTheoryError
from fedtheory.notebook_sizes import SIZES, by_size, notebook_size


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "full"),
        ({"FEDTHEORY_SMALL": "1"}, "small"),
        ({"FEDTHEORY_SMALL": "0"}, "full"),
        ({"FEDTHEORY_SMALL": ""}, "full"),
        ({"FEDTHEORY_SIZE": "small"}, "small"),
        ({"FEDTHEORY_SIZE": "medium"}, "medium"),
        ({"FEDTHEORY_SIZE": " Full "}, "full"),
        ({"FEDTHEORY_SIZE": ""}, "full"),
        # the test run sets FEDTHEORY_SMALL=1 (conftest.py); an explicit FEDTHEORY_SIZE wins
        ({"FEDTHEORY_SMALL": "1", "FEDTHEORY_SIZE": "medium"}, "medium"),
        ({"FEDTHEORY_SMALL": "1", "FEDTHEORY_SIZE": "full"}, "full"),
    ],
)
def test_size_from_the_environment(env, expected):
    assert notebook_size(env) == expected


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FEDTHEORY_SIZE": "large"}, "FEDTHEORY_SIZE='large'"),
        ({"FEDTHEORY_SIZE": "1"}, "FEDTHEORY_SIZE='1'"),
        ({"FEDTHEORY_SMALL": "yes"}, "FEDTHEORY_SMALL='yes'"),
        ({"FEDTHEORY_SMALL": "true", "FEDTHEORY_SIZE": "full"}, "FEDTHEORY_SMALL='true'"),
    ],
)
def test_an_unknown_value_is_an_error_that_names_it(env, named):
    with pytest.raises(FedTheoryError, match="small, medium, full") as err:
        notebook_size(env)
    assert named in str(err.value)


def test_by_size_picks_the_value_of_the_size(monkeypatch):
    for size in SIZES:
        assert (
            by_size(small=1, medium=2, full=3, size=size)
            == {"small": 1, "medium": 2, "full": 3}[size]
        )
    monkeypatch.delenv("FEDTHEORY_SMALL", raising=False)
    monkeypatch.setenv("FEDTHEORY_SIZE", "medium")
    assert by_size(small="s", medium="m", full="f") == "m"
    with pytest.raises(FedTheoryError, match="'huge'"):
        by_size(small=1, medium=2, full=3, size="huge")
