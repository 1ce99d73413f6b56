"""Where a report goes: checked before any computation, written whole or not at all.

* `check_report_dir` — the target must be creatable and writable, and must not be a file; an
  existing directory is accepted only when it is empty or is a report this toolkit wrote, recognised
  by the marker file `MARKER` (``.mamba-ode-report``, a small JSON record) at its top. Any other
  directory is refused: a report never overwrites a user's files.
* `staged_dir` — a context manager giving a fresh temporary directory next to the target; the
  report is written there and, only when everything succeeded, moved into place (the previous report,
  if any, is replaced at that moment). A failure leaves the previous report, or nothing — never half a
  report.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["MARKER", "ReportDirError", "check_report_dir", "is_report_dir", "staged_dir"]

#: The file that marks a directory as a report written by mamba-ode.
MARKER = ".mamba-ode-report"


class ReportDirError(ValueError):
    """The output directory cannot take a report (a file, not ours, or not writable)."""


def is_report_dir(path: str | os.PathLike, *, marker: str = MARKER) -> bool:
    """True when ``path`` is a directory holding the ``marker`` file (by default a report's `MARKER`)."""
    p = Path(path)
    return p.is_dir() and (p / marker).is_file()


def _existing_ancestor(p: Path) -> Path:
    a = p
    while not a.exists():
        if a.parent == a:
            break
        a = a.parent
    return a


def check_report_dir(out_dir: str | os.PathLike, *, marker: str = MARKER, what: str = "report") -> Path:
    """Check that a report can be written to ``out_dir``, before any work is done.

    Arguments:
        out_dir: the report directory (created when the report is written).
        marker, what: the marker file of the kind of directory written, and its name in messages (a
            saved analysis uses its own marker).

    Returns:
        The absolute path.

    Raises:
        TypeError: if out_dir is not a path.
        ReportDirError: (a ValueError) naming the path when it is empty, is a file, lies under a file,
            is a non-empty directory without the `MARKER` file, or cannot be written.
    """
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"argument 'out_dir' must be a path, got {type(out_dir).__name__}")
    if str(out_dir) == "":
        raise ReportDirError("the output directory is the empty string: name a directory")
    p = Path(out_dir).expanduser().absolute()
    if p.exists():
        if not p.is_dir():
            raise ReportDirError(f"output directory {str(p)!r} exists and is not a directory")
        if any(p.iterdir()) and not is_report_dir(p, marker=marker):
            raise ReportDirError(f"output directory {str(p)!r} exists, is not empty and is not a mamba-ode {what} "
                                 f"(it has no {marker} file): choose another directory or empty it")
    anc = _existing_ancestor(p.parent)
    if not anc.is_dir():
        raise ReportDirError(f"output directory {str(p)!r}: {str(anc)!r} is a file, not a directory")
    try:  # the only reliable test of "writable here": create something, then remove it
        os.rmdir(tempfile.mkdtemp(prefix=".mamba-ode-probe-", dir=anc))
    except OSError as exc:
        raise ReportDirError(f"output directory {str(p)!r}: cannot create files in {str(anc)!r} "
                             f"({exc.strerror or exc})") from None
    return p


@contextmanager
def staged_dir(out_dir: str | os.PathLike, *, generator: str = "mamba-ode", version: str = "",
               marker: str = MARKER, what: str = "report") -> Iterator[Path]:
    """Write a report into a temporary directory beside ``out_dir``, then move it into place.

    Arguments:
        out_dir: the final directory (checked with `check_report_dir`).
        generator, version: recorded in the marker file.
        marker, what: as in `check_report_dir`.

    Yields:
        The staging directory to write into.

    Raises:
        ReportDirError: see `check_report_dir`.
        OSError: when the file system refuses a write or a move (the previous report is kept).
    """
    out = check_report_dir(out_dir, marker=marker, what=what)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # a report directory like any other (mkdtemp makes it private)
    try:
        yield stage
        (stage / marker).write_text(json.dumps({"generator": generator, "version": version}) + "\n")
        check_report_dir(out, marker=marker, what=what)  # still ours (or absent) after the work
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
        try:
            os.replace(stage, out)
        except OSError:
            if old is not None:
                os.replace(old / out.name, out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
