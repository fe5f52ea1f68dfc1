"""What the device sync that checks each batched Cholesky costs on the GPU.

    python bench_factorisation_check.py        (CuPy; run from benchmarks/)

Times one FedPM K = 1 round (as bench_round.py does) with fedtheory's batched factorisation,
then with the same factorisation minus its info-array check (so minus one device sync per
factorisation). A diagnostic: the check is what makes a failed factorisation raise.
"""

from __future__ import annotations

from functools import partial

from bench_round import a9a, machine, time_round, w8a_shaped
from fedtheory import linalg


def main() -> None:
    print("# machine: " + ", ".join(f"{k} {v}" for k, v in machine("cupy").items()))
    checked = linalg._cupy_batched_cholesky
    for name, build in (("a9a", a9a), ("w8a", w8a_shaped)):
        problem = build()
        problem.reference  # noqa: B018
        problem = problem.to("cupy")
        linalg._cupy_batched_cholesky = checked
        with_check = time_round(problem, 50)
        linalg._cupy_batched_cholesky = partial(checked, check=False)
        without = time_round(problem, 50)
        linalg._cupy_batched_cholesky = checked
        print(f"{name}: with check {with_check * 1e3:.3f} ms, without {without * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
