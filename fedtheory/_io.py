"""Writing result files: atomically, with the user's permissions, and checked before computing.

Every file the package writes (trace CSV and JSON, sweep Parquet and error files, claim
reports and tables, figures) goes through :func:`write_atomic`: the content goes to a temporary
file beside the destination, is flushed to disk (fsync), gets the mode a plain ``open`` would
give (0666 less the umask), and is renamed into place; readers see the old file or the whole
new one, and a failure leaves neither the file nor the temporary. :func:`write_together` puts
several files in place only once all of them were written (a CSV and its JSON metadata).
:func:`check_destination` refuses an unusable output path before any computation starts.
A failed write is a :class:`~fedtheory.errors.FedTheoryError` naming the path and the OS error.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import FedTheoryError, check

Writer = Callable[[str], None]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary(path: Path, write: Writer) -> str:
    """``write(tmp)`` on a fresh temporary beside ``path``, synced, with the user's mode."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
    except BaseException:
        _discard(tmp)
        raise
    return tmp


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def write_atomic(path: str | os.PathLike, write: Writer) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    return write_together([(path, write)])[0]


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """``text`` (UTF-8) into ``path``, atomically."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_together(items: Sequence[tuple[str | os.PathLike, Writer]]) -> list[Path]:
    """Write every (path, writer) to its temporary first; only when all succeeded, rename them
    into place (in order). On any failure nothing is renamed and no temporary is left."""
    done: list[tuple[Path, str]] = []
    try:
        for path, write in items:
            p = Path(path)
            done.append((p, _temporary(p, write)))
        for p, tmp in done:
            os.replace(tmp, p)
    except OSError as exc:
        for _, tmp in done:
            _discard(tmp)
        where = exc.filename or (str(done[-1][0]) if done else str(items[0][0]))
        raise FedTheoryError(f"cannot write {where}: {exc.strerror or exc}") from None
    except BaseException:
        for _, tmp in done:
            _discard(tmp)
        raise
    return [p for p, _ in done]


def check_destination(
    path: str | os.PathLike | None, option: str, suffixes: Sequence[str]
) -> Path | None:
    """``path`` as an output file of ``option``, checked before anything is computed: the
    suffix, an existing folder that this process may write into, and not a folder itself."""
    if path is None:
        return None
    out = Path(path)
    check(
        out.suffix in suffixes,
        f"{option} must name a {' or '.join(suffixes)} file, got {str(path)!r}",
    )
    parent = out.parent if str(out.parent) else Path(".")
    check(parent.is_dir(), f"{option}: folder {str(parent)!r} does not exist")
    check(not out.is_dir(), f"{option}: {str(out)!r} is a folder, not a file")
    check(
        os.access(parent, os.W_OK | os.X_OK),
        f"{option}: cannot write into folder {str(parent)!r} (permission denied)",
    )
    check(
        not out.exists() or os.access(out, os.W_OK),
        f"{option}: cannot overwrite {str(out)!r} (permission denied)",
    )
    return out
