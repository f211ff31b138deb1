"""Rewriting learnkit.toml safely, and seeing edits to it while running.

The change is made with tomlkit, a style-preserving TOML library: the file
stays byte for byte as it was (comments, blank lines, key order, quoting,
line endings) except the one value. The result is checked by parsing it
again: the whole document must equal the old one but for that value.

A rewrite holds an advisory lock (``fcntl.flock``) on learnkit.toml itself,
so no lock file is left beside it: a rename replaces the inode a waiter
locked, so after the wait the lock is kept only if it is still on the file
the path names, else taken again on the new one. It re-reads and validates
the file, refuses to proceed if it changed since the caller read it, writes
a temporary file in the same directory, fsyncs it, renames it over the
original and fsyncs the directory.
A crash at any point leaves either the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import tomlkit

from .._config import Config, parse_config
from .._errors import (
    ConcurrentEditError,
    ConfigError,
    ConfigNotWritableError,
    UnknownThresholdError,
)

__all__ = ["atomic_write", "file_lock", "lock_file", "rewrite_threshold", "unlock_file"]

log = logging.getLogger("learnkit")

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; rename is still atomic
    fcntl = None  # type: ignore[assignment]

#: Called with the temporary file's path just before the rename (crash tests).
_before_replace: Callable[[Path], None] | None = None


def lock_file(path: Path, *, timeout: float | None = None) -> int:
    """Take the exclusive advisory lock that guards rewrites of ``path``; its fd.

    The lock is on the file itself (opened read-only: a read-only config can
    be locked too). A rewrite renames a new inode over the path, so a waiter
    that got the lock on the replaced inode takes it again on the new one.

    Raises:
        ConcurrentEditError: ``timeout`` seconds passed while another holds it.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDONLY)
        if fcntl is None:  # pragma: no cover - Windows
            return fd
        try:
            if deadline is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise ConcurrentEditError(
                                f"{path} stayed locked by another change for {timeout:g} s; "
                                "try again") from None
                        time.sleep(0.005)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # replaced while we waited: lock the file the path names now


def unlock_file(fd: int) -> None:
    """Release a lock taken by :func:`lock_file`."""
    os.close(fd)  # closing the only descriptor releases the flock


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold the exclusive advisory lock that guards rewrites of ``path``."""
    fd = lock_file(path)
    try:
        yield
    finally:
        unlock_file(fd)


def _not_writable(path: Path) -> str | None:
    """Why ``path`` must not be rewritten (read-only file or directory), or None.

    Mode bits are checked, not only access: root may write a 0444 file, but
    its owner made it read-only on purpose.
    """
    st = path.stat()
    if not st.st_mode & 0o222 or not os.access(path, os.W_OK):
        return f"{path} is read-only"
    d = path.parent.stat()
    if not d.st_mode & 0o222 or not os.access(path.parent, os.W_OK):
        return f"its directory {path.parent} is read-only"
    return None


def atomic_write(path: Path, text: str, *, hold: list[int] | None = None) -> None:
    """Replace ``path`` with ``text``: temp file, fsync, rename, fsync the directory.

    The new file keeps the old one's mode and (where the process may set
    it) owner and group. With ``hold``, the new file is locked (its fd
    appended to ``hold``) before it is renamed into place, so the lock
    stays unbroken across the rename: nobody locks the new file until the
    caller releases it.

    Raises:
        ConfigNotWritableError: the file or its directory is read-only or
            immutable; the file is left as it was.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    mode = 0o644 if st is None else st.st_mode & 0o7777
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except PermissionError as e:
        raise ConfigNotWritableError(f"{path} cannot be rewritten: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)  # the umask does not apply: the mode as it was
            if st is not None and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(PermissionError):
                    os.fchown(f.fileno(), st.st_uid, st.st_gid)
            os.fsync(f.fileno())
        if _before_replace is not None:
            _before_replace(tmp)
        if hold is not None and fcntl is not None:
            new_fd = os.open(tmp, os.O_RDONLY)
            hold.append(new_fd)
            fcntl.flock(new_fd, fcntl.LOCK_EX)  # nobody else has it open yet
        try:
            os.replace(tmp, path)
        except PermissionError as e:  # immutable file or directory
            raise ConfigNotWritableError(f"{path} cannot be rewritten: {e.strerror}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _sweep_temporaries(path: Path) -> None:
    """Remove temporary files left by rewrites that crashed before their rename."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def _set_value(text: str, name: str, value: int | float) -> str:
    """``text`` with ``thresholds.NAME.value`` set to ``value``, all else kept."""
    document = tomlkit.parse(text)
    table: Any = document["thresholds"]
    table[name]["value"] = value
    return document.as_string()


def rewrite_threshold(
    path: Path, name: str, value: int | float, expected_digest: str | None,
    *, locked: bool = False, hold: list[int] | None = None,
) -> Config:
    """Set ``thresholds.NAME.value`` in learnkit.toml, keeping everything else.

    Args:
        path: the config file.
        name: the threshold.
        value: its new value.
        expected_digest: the digest of the file the caller decided on; None
            to skip the check.
        locked: the caller holds :func:`lock_file` already (to record the
            change under the same lock).
        hold: with ``locked``, receives the fd of the lock on the new file,
            which the caller releases (with the old one) when it is done.

    Returns:
        The config as written.

    Raises:
        ConcurrentEditError: the file changed since the caller read it.
        ConfigError: the file is invalid now (it is left untouched), or the
            new value would make it invalid.
        UnknownThresholdError: the file no longer defines ``name``.
        ConfigNotWritableError: the file or its directory is read-only or
            immutable; it is left as it was.
    """
    with contextlib.nullcontext() if locked else file_lock(path):
        why = _not_writable(path)
        if why is not None:
            raise ConfigNotWritableError(f"{why}; thresholds.{name} left as it is")
        _sweep_temporaries(path)
        text = path.read_bytes().decode("utf-8")  # as is: CRLF stays CRLF
        current = parse_config(text, path)  # an invalid file is reported, never overwritten
        if expected_digest is not None and current.digest != expected_digest:
            raise ConcurrentEditError(
                f"{path} changed since it was read; re-read it and decide again"
            )
        if name not in current.thresholds:
            raise UnknownThresholdError(f"{path} no longer defines [thresholds.{name}]")
        new_text = _set_value(text, name, value)
        expected: dict[str, Any] = tomllib.loads(text)
        expected["thresholds"][name]["value"] = value
        if tomllib.loads(new_text) != expected:  # pragma: no cover - a tomlkit bug
            raise ConfigError(path, f"could not set thresholds.{name}.value without "
                              "changing anything else; edit the file by hand",
                              key=f"thresholds.{name}.value")
        written = parse_config(new_text, path)
        atomic_write(path, new_text, hold=hold if locked else None)
        return written
