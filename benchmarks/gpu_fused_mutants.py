"""Show that the GPU tests of the fused kernels fail on deliberately broken kernels.

    python benchmarks/gpu_fused_mutants.py          (on a GPU machine, repository root)

Each mutant is one textual change to a file of the GPU path (the fused kernels, the deferred
status, the recorded rounds' draws and failure naming); the file is changed, the mutant's tests
(by default the fused-kernel tests of ``tests/test_cuda_kernels.py``) run in a fresh process,
and the file is restored. A mutant is "killed" when the tests fail. Prints one line
per mutant; exits 1 if any mutant survives.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_cuda_kernels.py", "-k", "fused or spd_solve or logistic"]
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
MUTANTS = [
    (
        "status_off_by_one",
        "fedtheory/cuda_kernels.py",
        "bad = k + 1;  /* the same in every lane */",
        "bad = k;  /* the same in every lane */",
    ),
    (
        "no_look_ahead_update",
        "fedtheory/cuda_kernels.py",
        "        update_rows(U, y, inv, n, k0, k1, k2, warp, 0, nwarps, lane);\n",
        "",
    ),
    (
        "back_substitution_rounding",
        "fedtheory/cuda_kernels.py",
        "const double xk = __shfl_sync(FULL, yl, k) * inv[j0 + k];",
        "const double xk = __shfl_sync(FULL, yl, k) * inv[j0 + k] * (1.0 + 1e-9);",
    ),
    (
        "trailing_tile_skips_a_column",
        "fedtheory/cuda_kernels.py",
        "if (c >= r && c < n) row[c] -= acc[i][j];",
        "if (c >= r && c < n - 1) row[c] -= acc[i][j];",
    ),
    (
        "logistic_hessian_weight",
        "fedtheory/cuda_kernels.py",
        "hw = sw * s * exp(-l);",
        "hw = sw * s * s;",
    ),
    (
        "fused_status_not_deferred",
        "fedtheory/linalg.py",
        "        pending.append((status, P.ndim, labels, what, hint))\n",
        "        pass\n",
    ),
    (
        "warp_panel_update_drops_a_pivot",
        "fedtheory/cuda_kernels.py",
        "for (int j = 0; j < NB; ++j) acc += f[j] * pk[j][g];",
        "for (int j = 0; j < NB - 1; ++j) acc += f[j] * pk[j][g];",
    ),
    (
        "warp_status_off_by_one",
        "fedtheory/cuda_kernels.py",
        "                bad = k + 1;\n                break;",
        "                bad = k;\n                break;",
    ),
    (
        "ema_contracted_to_fma",
        "fedtheory/cuda_kernels.py",
        '"out = __dadd_rn(__dmul_rn(th, rho), __dmul_rn(rest, h));",',
        '"out = th * rho + rest * h;",',
        ["tests/test_cuda_kernels.py", "-k", "curvature_average"],
    ),
    (
        "replay_names_the_round_not_the_client",
        "fedtheory/runner/graph.py",
        "{ first = t[0]; named = who; }",
        "{ first = t[0]; named = t[0]; }",
        ["tests/test_graph.py", "-k", "with_draws_names_the_client"],
    ),
    (
        "replay_draws_not_copied_in",
        "fedtheory/oracles.py",
        "            out.set(np.ascontiguousarray(host, dtype=out.dtype))\n",
        "            pass\n",
        ["tests/test_graph.py", "-x", "-k", "a_replayed_run_with_draws"],
    ),
    (
        "device_pcg_drops_the_buffered_half",
        "fedtheory/device_draws.py",
        "    g.has = 1;\n",
        "    g.has = 0;\n",
        ["tests/test_device_draws.py", "-x"],
    ),
    (
        "device_choice_skips_a_shuffle_draw",
        "fedtheory/device_draws.py",
        "for (long long i = S - 1; i >= 1; i--) {  // _shuffle_int(S, first=1)",
        "for (long long i = S - 1; i >= 2; i--) {  // _shuffle_int(S, first=1)",
        ["tests/test_device_draws.py", "-x"],
    ),
    (
        "device_rows_do_not_store_the_state",
        "fedtheory/device_draws.py",
        "    pcg_store(states + 6 * r, g);\n",
        "",
        ["tests/test_device_draws.py", "-x"],
    ),
    (
        "batch_drop_keeps_device_states",
        "fedtheory/runner/batch.py",
        "            self.inputs.device.to_host(self.gens)\n",
        "            pass\n",
        ["tests/test_graph.py", "-x", "-k", "a_replayed_batch"],
    ),
    (
        "minibatch_kernel_drops_the_regulariser",
        "fedtheory/cuda_kernels.py",
        "g[p * d + j] = lam * th[j] - acc;",
        "g[p * d + j] = -acc;",
        ["tests/test_oracles_stochastic.py", "-x", "-k", "fused"],
    ),
    (
        "minibatch_kernel_skips_the_last_row",
        "fedtheory/cuda_kernels.py",
        "            const double gq = __shfl_sync(FULL, mine, q);",
        "            const double gq = q + 1 < cnt ? __shfl_sync(FULL, mine, q) : 0.0;",
        ["tests/test_oracles_stochastic.py", "-x", "-k", "fused"],
    ),
    (
        "minibatch_kernel_tail_columns_skip_the_last_row",
        "fedtheory/cuda_kernels.py",
        "for (long long k = 0; k < b; k++) acc += gw[k] * A[(base + rows[k]) * d + j];",
        "for (long long k = 0; k + 1 < b; k++) acc += gw[k] * A[(base + rows[k]) * d + j];",
        ["tests/test_oracles_stochastic.py", "-x", "-k", "fused"],
    ),
]


def main() -> int:
    survived = 0
    for name, rel, old, new, *tests in MUTANTS:
        path = ROOT / rel
        text = path.read_text()
        if text.count(old) != 1:
            print(f"{name}: the text to change is not found once in {rel}")
            survived += 1
            continue
        try:
            path.write_text(text.replace(old, new))
            proc = subprocess.run(
                [*PYTEST, *(tests or [TESTS])[0]],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
        finally:
            path.write_text(text)
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        killed = proc.returncode != 0
        survived += not killed
        print(f"{name:32} {'killed' if killed else 'SURVIVED'}   {last}", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
