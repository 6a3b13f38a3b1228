"""One atomic file write for the whole suite (cache entries, reports, figures).

A temp file in the target's directory, fsync, then os.replace: a reader sees the old file or the
new one, never a torn one, and the temp file never outlives a failure (a killed writer's leftovers
are named `.<name>.*.tmp` so the cache can sweep them).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path, content: str | bytes, *, mode: int = 0o644) -> Path:
    """Write `content` (str as UTF-8) to `path` atomically; `mode` because mkstemp makes 0600 and
    reports, figures and cache entries are meant to be read by other users of the machine."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
