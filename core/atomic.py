"""Atomic writes for the whole suite: one file (cache entries, figures) or one directory (a report
set, whose files must never mix between runs).

atomic_write   a temp file in the target's directory, fsync, then os.replace: a reader sees the old
               file or the new one, never a torn one, and the temp file never outlives a failure (a
               killed writer's leftovers are named `.<name>.*.tmp` so the cache can sweep them).
swap_dir_in    a finished directory takes the place of another: on Linux one renameat2
               RENAME_EXCHANGE (a reader sees the old set or the new one, never neither); where the
               kernel or file system lacks it, two renames (for an instant the path is absent, but
               the files of two sets are still never mixed). The replaced set is then deleted.
dir_problem    the one-line reason a directory cannot be used (exists as a file, not writable,
               cannot be created), checked before a run starts instead of as a traceback mid-run.
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "swap_dir_in", "dir_problem"]

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


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


def swap_dir_in(src, dst) -> Path:
    """Put the directory `src` at `dst` (same file system), replacing and then deleting whatever
    directory was there; the caller serialises writers of `dst` (a lock) so none is lost."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise NotADirectoryError(f"swap_dir_in: {src} is not a directory")
    if not dst.exists():
        os.rename(src, dst)
        return dst
    if not dst.is_dir():
        raise NotADirectoryError(f"swap_dir_in: {dst} exists and is not a directory")
    if _exchange(src, dst):
        shutil.rmtree(src)  # src now holds the replaced set
        return dst
    old = dst.with_name(f".{dst.name}.{os.getpid()}.replaced")
    os.rename(dst, old)
    os.rename(src, dst)
    shutil.rmtree(old)
    return dst


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths with renameat2; False where that call is unavailable."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # kernel or file system without it
        return False
    raise OSError(err, f"renameat2 exchange {a} <-> {b}: {os.strerror(err)}")


def dir_problem(path, *, writable: bool = True) -> str | None:
    """None if `path` is a directory this process can use (read, and write when `writable`) or can
    create (its nearest existing ancestor is a writable directory); else why not, in one line that
    starts with the path. Creates nothing, so checking leaves no directories behind."""
    path = Path(path)
    need = os.R_OK | os.X_OK | (os.W_OK if writable else 0)
    if path.exists():
        if not path.is_dir():
            return f"{path} exists and is not a directory; give a directory"
        if not os.access(path, need):
            what = "writable" if writable else "readable"
            return f"{path} is not {what} by this user; give a directory you can " \
                   f"{'write' if writable else 'read'}"
        return None
    if not writable:
        return None  # a missing read-only directory is the caller's "not found", not a usage error
    anc = next(a for a in path.parents if a.exists())
    if not anc.is_dir() or not os.access(anc, os.W_OK | os.X_OK):
        what = "is not a directory" if not anc.is_dir() else "is not writable"
        return f"{path} cannot be created: {anc} {what}"
    return None
