"""Carry the mutation list across a pure reformatting of the tree (``ruff format``).

    python benchmarks/mutation/refresh_after_format.py --before REV [--write]

For every mutant whose snippet no longer occurs exactly once in its (reformatted) file, the
mutant is applied to the file as it was at git revision ``REV`` (before the reformatting), the
unmutated and the mutated file are both put through ``ruff format`` (the project's settings),
and the lines where the two formatted texts differ become the new snippet and replacement
(widened by context lines until the snippet is unique in the file). The bug is therefore the
same bug, in the new layout. Prints each refreshed mutant; ``--write`` rewrites mutants.toml
in place (only those entries' ``original`` / ``replacement`` strings). Refuses, naming the
mutant, when the formatted unmutated file differs from the file in the tree (the tree was
changed by more than the formatter) or when a snippet would need triple quotes.
"""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys

from run_mutants import MUTANTS, REPO, load_mutants


def fmt(text: str, filename: str) -> str:
    out = subprocess.run(
        ["ruff", "format", "--stdin-filename", filename, "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    return out.stdout


def changed_block(a: list[str], b: list[str]) -> tuple[int, int, int, int]:
    ops = [
        op
        for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
        if op[0] != "equal"
    ]
    if not ops:
        raise SystemExit("the mutation disappears under formatting")
    return ops[0][1], ops[-1][2], ops[0][3], ops[-1][4]


def refresh(mutant, before: str) -> tuple[str, str]:
    path = REPO / mutant.file
    now = path.read_text()
    old = subprocess.run(
        ["git", "show", f"{before}:{mutant.file}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    if old.count(mutant.original) != 1:
        raise SystemExit(f"{mutant.name}: its snippet is not exactly once in {before}")
    a = fmt(old, mutant.file)
    if a != now:
        raise SystemExit(f"{mutant.name}: {mutant.file} differs from `ruff format` of {before}")
    b = fmt(old.replace(mutant.original, mutant.replacement), mutant.file)
    al, bl = a.split("\n"), b.split("\n")
    i1, i2, j1, j2 = changed_block(al, bl)
    while True:
        snippet = "\n".join(al[i1:i2])
        if i2 > i1 and a.count(snippet) == 1:
            break
        i1, j1 = max(0, i1 - 1), max(0, j1 - 1)
        if a.count("\n".join(al[i1:i2])) != 1:
            i2, j2 = min(len(al), i2 + 1), min(len(bl), j2 + 1)
    repl = "\n".join(bl[j1:j2])
    if "'''" in snippet + repl:
        raise SystemExit(f"{mutant.name}: a snippet holds ''' (write it by hand)")
    return snippet, repl


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git revision before the reformatting")
    ap.add_argument("--write", action="store_true", help="rewrite mutants.toml")
    args = ap.parse_args()
    text = MUTANTS.read_text()
    for m in load_mutants():
        if (REPO / m.file).read_text().count(m.original) == 1:
            continue
        snippet, repl = refresh(m, args.before)
        print(f"{m.name}:\n  - {m.original!r}\n  + {snippet!r}\n  -> {repl!r}")
        for key, old, new in (
            ("original", m.original, snippet),
            ("replacement", m.replacement, repl),
        ):
            entry = f"{key} = '''{old}'''"
            if text.count(entry) != 1:
                raise SystemExit(f"{m.name}: cannot find its {key} in {MUTANTS.name}")
            text = text.replace(entry, f"{key} = '''{new}'''")
    if args.write:
        MUTANTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
