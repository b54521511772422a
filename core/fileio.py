"""Crash-safe file writes: write to a temporary name in the same folder, then rename over the target."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UsageError

_UMASK = os.umask(0)
os.umask(_UMASK)


def ensure_writable_dir(path: str | os.PathLike, option: str = "--artifacts") -> Path:
    """Create `path` if needed and check that files can be written there (`option` chose it)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create folder {path}: {exc.strerror or exc}; choose another with {option}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"folder {path} is not writable; choose another with {option}")
    return path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target` in one rename.

    On any exception the temporary file is removed and `target` is left as it was.
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(target: str | os.PathLike, data) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_report(folder: str | os.PathLike, stem: str, markdown: str, data) -> None:
    """A benchmark's results: <folder>/<stem>.json (the figures) and <stem>.md (its table), each
    replaced in one rename."""
    write_json(Path(folder) / f"{stem}.json", data)
    with atomic_path(Path(folder) / f"{stem}.md") as tmp:
        tmp.write_text(markdown)
