"""The CLI's state directory: where it is, an exclusive file lock, an atomic JSON write.

The token guard and the journal registry keep small JSON records there; journals lock
their own file with the same primitive.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["hold", "lock", "state_dir", "write_json"]


def state_dir(env: Mapping[str, str]) -> Path:
    """``$ENKASH_STATE_DIR``, else ``$XDG_STATE_HOME/enkash-coins``, else ``~/.local/state/enkash-coins``."""
    if env.get("ENKASH_STATE_DIR"):
        return Path(env["ENKASH_STATE_DIR"])
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "enkash-coins"


def lock(path: Path) -> IO[bytes]:
    """Hold an exclusive lock on ``path`` for as long as the returned file is open.

    Raises:
        BlockingIOError: another process holds it.
    """
    handle = path.open("a+b")
    try:
        try:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # Windows
            import msvcrt

            try:
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined, unused-ignore]
            except OSError as exc:  # a held lock is EACCES (or EDEADLOCK) there: the same "try again"
                if exc.errno in (errno.EACCES, errno.EDEADLK):
                    raise BlockingIOError(exc.errno, "the lock is held by another process") from None
                raise
    except OSError:
        handle.close()
        raise
    return handle


@contextlib.contextmanager
def hold(path: Path, seconds: float) -> Iterator[None]:
    """Hold the lock on ``path``, waiting at most ``seconds`` for other processes to let go.

    Raises:
        OSError: the directory cannot be used, or the lock was not free in time.
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            handle = lock(path)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield
    finally:
        handle.close()


def write_json(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON, all or nothing (a temporary file, then a rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: a crash never leaves an empty record
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
