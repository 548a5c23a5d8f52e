"""Locks between processes on one machine, and a graceful stop on SIGTERM / Ctrl-C.

:class:`FileLock` holds an advisory ``fcntl.flock`` on a file that records who holds it (pid, host,
start time, command). The kernel drops the lock when its process ends, however it ends (SIGKILL
included), so a lock file left behind by a killed process is *stale*: the next process takes it and
reports whose it was (:attr:`FileLock.stale`), while a lock whose holder is alive is refused
(:class:`LockedError`, naming the holder) or waited for. ``flock`` locks are not shared over every
network file system; a folder on NFS gets the protection only where the server supports them.

:class:`GracefulStop` turns SIGTERM and the first Ctrl-C into a request that a loop polls
(:attr:`GracefulStop.requested`), so a training loop finishes its step, writes a checkpoint and exits;
a second Ctrl-C stops at once (``KeyboardInterrupt``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["FileLock", "GracefulStop", "LockedError"]


class LockedError(RuntimeError):
    """Another live process holds the lock; ``holder`` is what it recorded (pid, host, started, command)."""

    def __init__(self, message: str, holder: dict[str, Any]):
        super().__init__(message)
        self.holder = holder


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process that recorded nothing"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    command = holder.get("command")
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when}" + (
        f": {command}" if command else ""
    )


class FileLock:
    """An exclusive lock on ``path`` between processes (``fcntl.flock``), released when the holder ends.

    ``what`` names the locked thing in messages ("training run runs/x"). Use as a context manager, or
    :meth:`acquire` / :meth:`release`. A lock held by this object is not re-entrant: a second
    :class:`FileLock` on the same path, in this process or another, is refused while the first holds it.
    """

    def __init__(self, path: str | os.PathLike, what: str | None = None):
        self.path = Path(path)
        self.what = what or str(self.path)
        self.stale: dict[str, Any] | None = None  # what a dead holder left in the file, when taken over
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> dict[str, Any]:
        """What the current (or last) holder recorded in the file; {} when nothing readable is there."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self, *, blocking: bool = False, timeout: float | None = None, log: Any = None) -> FileLock:
        """Take the lock. Not ``blocking``: :class:`LockedError` at once when a live process holds it;
        ``blocking``: wait for it (at most ``timeout`` seconds, then LockedError), telling ``log`` (a
        ``print``-like function) once whom it waits for. Returns ``self``."""
        if self._fd is not None:
            raise RuntimeError(f"{self.what}: this lock is already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        told = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = self.holder()
                if not blocking or (deadline is not None and time.monotonic() >= deadline):
                    raise LockedError(f"{self.what} is in use by {_describe(holder)}", holder) from None
                if log is not None and not told:
                    log(f"waiting for {self.what}, in use by {_describe(holder)}")
                    told = True
                time.sleep(0.05)
                continue
            # the holder before us may have unlinked the file between our open and our flock: then we
            # hold a lock on a file nobody else will open; start again on the path's current file
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            break
        previous = os.read(fd, 1 << 16)
        if previous.strip():
            try:
                self.stale = json.loads(previous)
            except ValueError:
                self.stale = {}
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "",
        }
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def stale_message(self) -> str | None:
        """A line about the dead holder whose lock was taken over, or None."""
        if self.stale is None:
            return None
        return f"{self.what}: took over a stale lock of {_describe(self.stale)}, which ended without releasing it"

    def release(self) -> None:
        """Drop the lock and remove the file (a clean end leaves no lock file behind)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still locked, so no other process locks the old file meanwhile
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> FileLock:  # `with lock:` or `with lock.acquire(blocking=True):`
        return self if self.held else self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            with contextlib.suppress(Exception):
                os.close(self._fd)


class GracefulStop:
    """While active (a context manager), SIGTERM and the first SIGINT (Ctrl-C) set :attr:`requested` to
    the signal's name instead of killing the process; a second SIGINT raises ``KeyboardInterrupt``.

    Processes forked meanwhile (DataLoader workers) inherit the handlers and ignore these signals: a
    Ctrl-C reaches the whole process group, and the main process ends its workers itself. Signal
    handlers can only be set in the main thread; elsewhere this does nothing (``requested`` stays None). The previous handlers come back on exit. ``log`` tells the user what will happen.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, log: Any = None):
        self.requested: str | None = None
        self.log = log
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked child (a DataLoader worker): its parent decides and ends it
            return
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = self.requested or name
        if self.log is not None:
            again = "; press Ctrl-C again to stop at once" if signum == signal.SIGINT else ""
            self.log(f"{name}: stopping after this step, with a checkpoint{again}")

    def request(self, name: str) -> None:
        """Ask for a stop as if a signal ``name`` had come (another process of the run received one)."""
        self.requested = self.requested or name

    def agreed(self, any_process: Callable[[bool], bool]) -> bool:
        """Whether to stop now, decided with the run's other processes: ``any_process(flag)`` tells
        whether any process's flag holds (an all-reduce; ``bool`` itself in a single process).

        Every process follows the reduced answer alone. A signal whose handler runs while the reduce
        returns sets :attr:`requested` here only; reading it again would stop this process while the
        others, which saw no flag, take another step, and the run would hang. That signal counts at
        the next call. When another process asked, :attr:`requested` becomes ``"SIGTERM"``.
        """
        if not any_process(self.requested is not None):
            return False
        self.request("SIGTERM")
        return True

    def __enter__(self) -> GracefulStop:
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def exit_code(self) -> int:
        """The shell's code for the requested signal (128 + its number: 143 SIGTERM, 130 SIGINT), 0 if none."""
        return 0 if self.requested is None else 128 + int(signal.Signals[self.requested])
