"""Atomic file writing: the one place where abp_np puts bytes on disk.

A write goes to a temporary file in the destination folder, which then replaces the destination in
one ``os.replace``: a reader sees the old file or the new one, never half of either, and an
interrupted write (Ctrl-C, a kill, a full disk) leaves the destination as it was. Images, sounds,
checkpoints and a run's ``model.json`` all land through :func:`atomic_write`. A written file gets
the mode a file made by ``open`` would have (``0o666`` less the umask), not the owner-only mode of
the temporary file it was written as.

Three rules make a write safe to interrupt:

* **Ctrl-C waits for the write.** SIGINT is deferred while a write is under way (in the main
  thread, where Python handles signals): the write finishes, the file is in place, and then the
  interrupt is delivered as it would have been. A write is short; an interrupt inside it would
  otherwise tear through ``zipfile``'s close path (``np.savez``) and be lost behind its error.
* **No litter.** The temporary file is ``.<name>.<pid>.<random>.tmp`` beside the target. A writer
  that fails removes its own; one that was killed cannot, and the next write of the same target
  (or :func:`remove_stale_temps`) removes the temporary files of writers that are no longer
  running.
* **Errors name the file.** A failing write (a full disk, a read-only folder) raises ``OSError``
  with its ``errno``, naming the target and saying that the file already there was kept.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "deferred_interrupt", "remove_stale_temps"]

#: When this process loaded the module: no write of this process is older.
_STARTED = time.time()


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """A block that Ctrl-C does not break: SIGINT is held until the block ends, then delivered.

    Outside the main thread (where Python handles no signals) the block changes nothing. Blocks
    may be nested; the outermost one delivers. A SIGINT that arrived during the block reaches
    the handler that was in force before it: Python's default raises ``KeyboardInterrupt`` at the
    end of the block (after the block's own exception, if any, has been replaced by it).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if getattr(previous, "_abp_deferring", False):  # nested: the outer block delivers
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        pending.append(signum)

    hold._abp_deferring = True  # type: ignore[attr-defined]
    try:
        signal.signal(signal.SIGINT, hold)
    except (ValueError, OSError):  # pragma: no cover - signals unavailable here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            if previous is signal.default_int_handler:
                raise KeyboardInterrupt
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous != signal.SIG_IGN:  # SIG_DFL: what the signal would have done
                signal.raise_signal(signal.SIGINT)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` is running (POSIX); True where that cannot be told."""
    if pid == os.getpid():
        return True
    if os.name != "posix":  # pragma: no cover - os.kill(pid, 0) would end it on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that dead writers of ``path`` left beside it; return them.

    A temporary file ``.<name>.<pid>.<random>.tmp`` is stale when process ``pid`` no longer
    runs; one without a process id (an older abp_np, or ``.<name>.tmp``) when it is older
    than this process. Files that cannot be removed are left alone.
    """
    path = Path(path)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    head, tail = f".{path.name}.", ".tmp"
    for entry in entries:
        name = entry.name
        if name == f".{path.name}{tail}":  # the fixed name an older abp_np used
            middle = ""
        elif name.startswith(head) and name.endswith(tail) and len(name) > len(head + tail):
            middle = name[len(head) : -len(tail)]  # "<pid>.<random>" or "<random>"
        else:
            continue
        mine = re.fullmatch(r"(\d+)\.[A-Za-z0-9_]+", middle)
        if mine is None and not re.fullmatch(r"[A-Za-z0-9_]*", middle):
            continue  # another file's temporary (e.g. of "<name>.x")
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if mine is not None:
                stale = not _alive(int(mine.group(1)))
            else:
                stale = entry.stat(follow_symlinks=False).st_mtime < _STARTED
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, then move it onto ``path``.

    Parent folders are created, and temporary files that dead writers of ``path`` left are
    removed first (:func:`remove_stale_temps`). Ctrl-C is held until the file is in place
    (:func:`deferred_interrupt`). On any error the temporary file is removed and ``path`` is
    left untouched; an ``OSError`` (a full disk, ...) is raised again naming ``path`` and
    saying what was kept, with its ``errno``.
    """
    path = Path(path)
    with deferred_interrupt():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(path)
            fd, tmp = tempfile.mkstemp(
                dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
            )
        except OSError as err:
            raise _naming(err, path, None) from err
        try:
            if hasattr(os, "fchmod"):  # mkstemp makes 0o600; the file follows the umask
                os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            if isinstance(err, OSError) and not isinstance(err, _WriteError):
                raise _naming(err, path, tmp) from err
            raise
    return path


def _umask() -> int:
    """The process's file-mode creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _WriteError(OSError):
    """An ``OSError`` that already names the file being written."""


def _naming(err: OSError, path: Path, tmp: str | None) -> OSError:
    """``err`` again, saying which file could not be written and what was kept."""
    kept = (
        f"{str(path)!r} was left as it was"
        if path.exists()
        else f"nothing was written to {str(path)!r}"
    )
    reason = err.strerror or str(err) or type(err).__name__
    if err.errno == _errno.ENOSPC:
        reason += " (free some space, or write elsewhere)"
    message = f"cannot write {str(path)!r}: {reason}; {kept}"
    return _WriteError(err.errno, message) if err.errno is not None else _WriteError(message)
