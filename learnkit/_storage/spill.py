"""Records past the memory bound, kept in a local file until the store takes them.

The writer's queue holds at most twice ``storage.max_queue`` records. A sync
caller on the event loop (a plain loop of ``kit.record``) cannot wait for the
writer that runs on the same loop, and records past that bound used to be
dropped. They now go to a spill file (JSON Lines, mode 0600) beside the
database, and come back into the queue, oldest first, as the writer makes
room; at close, what is still queued when the store cannot take it is
spilled too.

A file is owned by one process (an ``flock`` held while it is open). A file
whose owner is gone (killed, or closed while the store was down) is an
*orphan*: the next kit that opens the same store replays it before it starts
writing, then deletes it. Progress is kept in a ``.done`` file beside it (the
byte offset of what is durable), so a replay that stops half way carries on
where it stopped.

What a spilled record loses: nothing of its fields. Its parent link is kept
when the parent already had a database id when the record was spilled, or
(in the process that spilled it) always; an orphan's record whose parent had
no id yet is stored without a parent. A record whose ``running`` row was
already written cannot be completed from an orphan (the next open marks that
row ``abandoned``): it is counted as dropped.

At close, the batches the store would not take (a lock held too long, a server
gone) are spilled too, before what is still queued: each record under the id
its batch had reserved. Before writing such records, a replay asks the store
which of those ids already hold a row (a commit whose reply was lost, or a
replay that stopped half way) and leaves them out, so none is stored twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .._model import Operation

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no spill file (records are counted)
    fcntl = None  # type: ignore[assignment]

__all__ = ["Spill", "lock_orphan", "mark_done", "orphans", "read_orphan", "remove"]

log = logging.getLogger("learnkit")

_FIELDS = ("op_type", "key", "outcome", "started_at", "ended_at", "duration", "error_type",
           "error_message", "admission", "context")
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _pattern(stem: str) -> str:
    return f"{stem}.spill-*.jsonl"


def _done_path(path: Path) -> Path:
    return path.with_name(path.name + ".done")


def _line(op: Operation) -> bytes:
    rec: dict[str, Any] = {name: getattr(op, name) for name in _FIELDS}
    parent = op.parent
    # A parent's id is worth keeping once its row exists, or once it ended (then it
    # is stored or spilled too); not for a parent still running whose running row
    # never landed (a batch refused at close): that id will never hold a row.
    if parent is not None and parent.db_id is not None and (
            parent.persisted or parent.outcome != "running"):
        rec["parent_db_id"] = parent.db_id
    if op.db_id is not None:
        if op.persisted:
            rec["db_id"] = op.db_id
        else:  # its row was prepared in a batch that never committed: the id is its own
            rec["reserved_id"] = op.db_id
    return (_dumps(rec) + "\n").encode("utf-8", "surrogatepass")


class _Ref:
    """A parent known only by its database id (an orphan's record)."""

    __slots__ = ("db_id", "parent", "persisted")

    def __init__(self, db_id: int) -> None:
        self.db_id = db_id
        self.persisted = True
        self.parent = None


def _operation(rec: dict[str, Any], parent: Any) -> Operation:
    op = Operation(rec["op_type"], rec.get("key"), rec.get("context"), rec["started_at"],
                   0.0, parent)
    op.outcome = rec["outcome"]
    op.ended_at = rec.get("ended_at")
    op.duration = rec.get("duration")
    op.error_type = rec.get("error_type")
    op.error_message = rec.get("error_message")
    op.admission = rec.get("admission")
    db_id = rec.get("db_id")
    if db_id is not None:
        op.db_id = db_id
        op.persisted = True
    elif type(reserved := rec.get("reserved_id")) is int:
        # Inserted under the id its process reserved, so that a batch which did
        # commit after all (a lost reply) refuses it instead of storing it twice.
        op.db_id = reserved
    return op


class Spill:
    """This process's spill file: records appended past the memory bound, taken
    back oldest first. Never raises: a record it cannot keep returns False."""

    def __init__(self, directory: Path, stem: str, max_bytes: int) -> None:
        self.directory = directory
        self.stem = stem
        self.max_bytes = max_bytes
        self.path: Path | None = None
        self._w: BinaryIO | None = None
        self._r: BinaryIO | None = None
        self._size = 0
        self._read = 0
        #: Parents of the records in the file, run-length encoded: [count, parent].
        self._parents: list[list[Any]] = []
        #: Records in the file not yet taken back.
        self.count = 0
        #: Records ever spilled and taken back, since the kit opened.
        self.spilled = 0
        self.replayed = 0
        self._failed = False

    def add(self, op: Operation) -> bool:
        """Append one completed operation; False when it cannot be kept."""
        if self._failed or fcntl is None:
            return False
        try:
            if self._w is None:
                self._open()
            line = _line(op)
            if self._size + len(line) > self.max_bytes:
                return False
            assert self._w is not None
            self._w.write(line)
        except (OSError, ValueError, TypeError) as exc:
            self._failed = True
            log.error("learnkit: cannot spill records to %s (%s); they are dropped and "
                      "counted", self.path or self.directory, exc)
            return False
        self._size += len(line)
        runs = self._parents
        if runs and runs[-1][1] is op.parent:
            runs[-1][0] += 1
        else:
            runs.append([1, op.parent])
        self.count += 1
        self.spilled += 1
        return True

    def _open(self) -> None:
        host = "".join(c if c.isalnum() else "-" for c in socket.gethostname())[:40]
        name = f"{self.stem}.spill-{host}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        path = self.directory / name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # ours while we live: not an orphan
        self.path = path
        self._w = os.fdopen(fd, "ab", buffering=1 << 16)
        self._r = open(path, "rb")  # noqa: SIM115 - kept open with the writer side

    def take(self, n: int) -> list[Operation]:
        """Up to ``n`` spilled records, oldest first, as operations to queue again."""
        if not self.count or self._w is None or self._r is None:
            return []
        out: list[Operation] = []
        try:
            self._w.flush()
            self._r.seek(self._read)
            runs = self._parents
            while len(out) < n and self.count:
                raw = self._r.readline()
                if not raw.endswith(b"\n"):
                    break
                self._read += len(raw)
                parent = runs[0][1]
                runs[0][0] -= 1
                if not runs[0][0]:
                    runs.pop(0)
                self.count -= 1
                out.append(_operation(json.loads(raw), parent))
        except (OSError, ValueError) as exc:  # pragma: no cover - a disk fault mid-read
            log.error("learnkit: cannot read back %s (%s); %d spilled record(s) lost",
                      self.path, exc, self.count)
            self.count = 0
        self.replayed += len(out)
        return out

    def durable(self) -> None:
        """Everything taken back so far is stored: empty the file when all of it is."""
        if self._w is None or self.count:
            if self._w is not None and self._read:
                self._mark_done()
            return
        try:
            self._w.flush()
            os.ftruncate(self._w.fileno(), 0)
            self._size = self._read = 0
            with contextlib.suppress(FileNotFoundError):
                assert self.path is not None
                _done_path(self.path).unlink()
        except OSError:  # pragma: no cover - keep going; the .done offset still holds
            self._mark_done()

    def _mark_done(self) -> None:
        assert self.path is not None
        with contextlib.suppress(OSError):
            _done_path(self.path).write_text(str(self._read))

    def close(self) -> int:
        """Close the file: removed when empty, else left for the next open (returns how
        many records it still holds)."""
        left = self.count
        if self._w is None:
            return left
        assert self.path is not None and self._r is not None
        with contextlib.suppress(OSError):
            self._w.flush()
            os.fsync(self._w.fileno())
        if left:
            self._mark_done()
        else:
            with contextlib.suppress(OSError):
                self.path.unlink()
            with contextlib.suppress(OSError):
                _done_path(self.path).unlink()
        self._r.close()
        self._w.close()  # releases the lock
        self._w = self._r = None
        return left


def orphans(directory: Path, stem: str) -> list[Path]:
    """Spill files of this store whose process is gone (none are locked)."""
    if fcntl is None:
        return []
    out = []
    for path in sorted(directory.glob(_pattern(stem))):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # a live process owns it (or another kit is replaying it)
            continue
        os.close(fd)
        out.append(path)
    return out


def lock_orphan(path: Path, stack: contextlib.ExitStack) -> bool:
    """Take an orphan's lock for the replay (released when ``stack`` closes);
    False when another process holds it or the file is gone."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    stack.callback(os.close, fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def read_orphan(path: Path, chunk: int) -> Iterator[tuple[list[Operation], int, int]]:
    """An orphan's records from where an earlier replay stopped, in chunks:
    ``(operations, records skipped, offset after the chunk)``.

    The caller holds the file's lock, stores each chunk, then calls
    :func:`mark_done` with the offset.
    """
    try:
        start = int(_done_path(path).read_text() or 0)
    except (OSError, ValueError):
        start = 0
    with open(path, "rb") as f:
        f.seek(start)
        ops: list[Operation] = []
        skipped = 0
        offset = start
        for raw in f:
            if not raw.endswith(b"\n"):
                break  # a line cut by a crash: nothing of it was promised
            offset += len(raw)
            try:
                rec = json.loads(raw)
            except ValueError:
                skipped += 1
                continue
            if rec.get("db_id") is not None:
                skipped += 1  # its running row is abandoned now; see the module's text
                continue
            parent = rec.get("parent_db_id")
            ops.append(_operation(rec, None if parent is None else _Ref(parent)))
            if len(ops) >= chunk:
                yield ops, skipped, offset
                ops, skipped = [], 0
        yield ops, skipped, offset


def mark_done(path: Path, offset: int) -> None:
    _done_path(path).write_text(str(offset))


def remove(path: Path) -> None:
    for p in (path, _done_path(path)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
