"""The SQLite schema, as numbered migrations (``PRAGMA user_version`` is the number).

Each entry migrates the schema from version ``i`` to ``i + 1`` and runs in
one transaction with the version bump. Never edit a released entry: add one.
"""

from __future__ import annotations

__all__ = ["EXCLUSIVE", "MIGRATIONS", "SCHEMA_VERSION"]

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE operations (
        id INTEGER PRIMARY KEY,
        op_type TEXT NOT NULL,
        key TEXT,
        outcome TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        duration REAL,
        error_type TEXT,
        error_message TEXT,
        context TEXT,
        parent_id INTEGER,
        session_id INTEGER
    );
    CREATE INDEX operations_ended ON operations (ended_at);
    CREATE INDEX operations_unfinished ON operations (started_at) WHERE ended_at IS NULL;
    CREATE TABLE rollup_hourly (
        op_type TEXT NOT NULL,
        hour INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        n INTEGER NOT NULL,
        duration_sum REAL NOT NULL,
        PRIMARY KEY (hour, op_type, outcome)
    ) WITHOUT ROWID;
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        pid_start TEXT,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL,
        ended_at REAL,
        state TEXT NOT NULL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    """
    ALTER TABLE operations ADD COLUMN admission REAL;
    CREATE TABLE threshold_changes (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        name TEXT NOT NULL,
        old_value REAL,
        new_value REAL NOT NULL,
        kind TEXT NOT NULL,
        confidence REAL,
        reason TEXT,
        evidence TEXT,
        samples INTEGER,
        status TEXT NOT NULL DEFAULT 'applied',
        verdict TEXT,
        verdict_at REAL
    );
    CREATE INDEX threshold_changes_name ON threshold_changes (name, at);
    """,
    """
    CREATE TABLE context_rollup (
        hour INTEGER NOT NULL,
        op_type TEXT NOT NULL,
        attr TEXT NOT NULL,
        value TEXT NOT NULL,
        outcome TEXT NOT NULL,
        explore INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (hour, op_type, attr, value, outcome, explore)
    ) WITHOUT ROWID;
    CREATE TABLE error_rollup (
        hour INTEGER NOT NULL,
        op_type TEXT NOT NULL,
        error_type TEXT NOT NULL,
        signature TEXT NOT NULL,
        n INTEGER NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        example TEXT NOT NULL,
        PRIMARY KEY (hour, op_type, error_type, signature)
    ) WITHOUT ROWID;
    CREATE TABLE error_context_rollup (
        hour INTEGER NOT NULL,
        op_type TEXT NOT NULL,
        error_type TEXT NOT NULL,
        signature TEXT NOT NULL,
        attr TEXT NOT NULL,
        value TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (hour, op_type, error_type, signature, attr, value)
    ) WITHOUT ROWID;
    """,
    # Imports: a content hash per imported record, so that importing the
    # same records again adds nothing. Tracked operations leave it NULL.
    """
    ALTER TABLE operations ADD COLUMN import_hash BLOB;
    CREATE UNIQUE INDEX operations_import_hash ON operations (import_hash)
        WHERE import_hash IS NOT NULL;
    """,
    # Context rollups keyed by integers: each (op_type, attr, value) and each
    # (op_type, error_type, signature) is stored once, and the hourly rows hold
    # its id. A year's window then sums and sorts small integer keys instead of
    # strings (3.0 s -> 1.2 s for 2.8M rows) and the tables take a third of
    # the space. The old names stay as views, for reading.
    """
    CREATE TABLE context_keys (
        id INTEGER PRIMARY KEY,
        op_type TEXT NOT NULL,
        attr TEXT NOT NULL,
        value TEXT NOT NULL,
        UNIQUE (op_type, attr, value)
    );
    CREATE TABLE error_keys (
        id INTEGER PRIMARY KEY,
        op_type TEXT NOT NULL,
        error_type TEXT NOT NULL,
        signature TEXT NOT NULL,
        UNIQUE (op_type, error_type, signature)
    );
    INSERT INTO context_keys (op_type, attr, value)
        SELECT op_type, attr, value FROM context_rollup
        UNION SELECT op_type, attr, value FROM error_context_rollup;
    INSERT INTO error_keys (op_type, error_type, signature)
        SELECT DISTINCT op_type, error_type, signature FROM error_context_rollup;
    CREATE TABLE context_rollup_hourly (
        hour INTEGER NOT NULL,
        key INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        explore INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (hour, key, outcome, explore)
    ) WITHOUT ROWID;
    INSERT INTO context_rollup_hourly (hour, key, outcome, explore, n)
        SELECT r.hour, k.id, r.outcome, r.explore, r.n FROM context_rollup r
        JOIN context_keys k ON k.op_type = r.op_type AND k.attr = r.attr AND k.value = r.value;
    CREATE TABLE error_context_rollup_hourly (
        hour INTEGER NOT NULL,
        error_key INTEGER NOT NULL,
        key INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (hour, error_key, key)
    ) WITHOUT ROWID;
    INSERT INTO error_context_rollup_hourly (hour, error_key, key, n)
        SELECT r.hour, e.id, k.id, r.n FROM error_context_rollup r
        JOIN error_keys e ON e.op_type = r.op_type AND e.error_type = r.error_type
            AND e.signature = r.signature
        JOIN context_keys k ON k.op_type = r.op_type AND k.attr = r.attr AND k.value = r.value;
    DROP TABLE context_rollup;
    DROP TABLE error_context_rollup;
    CREATE VIEW context_rollup AS
        SELECT r.hour, k.op_type, k.attr, k.value, r.outcome, r.explore, r.n
        FROM context_rollup_hourly r JOIN context_keys k ON k.id = r.key;
    CREATE VIEW error_context_rollup AS
        SELECT r.hour, e.op_type, e.error_type, e.signature, k.attr, k.value, r.n
        FROM error_context_rollup_hourly r JOIN error_keys e ON e.id = r.error_key
        JOIN context_keys k ON k.id = r.key;
    """,
    # A daily context rollup beside the hourly one: a long window reads whole
    # UTC days from it (2.8M hourly rows a year at 1M operations, 0.64M daily),
    # the hours at either end from the hourly table, the partial hours from rows.
    """
    CREATE TABLE context_rollup_daily (
        day INTEGER NOT NULL,
        key INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        explore INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (day, key, outcome, explore)
    ) WITHOUT ROWID;
    INSERT INTO context_rollup_daily (day, key, outcome, explore, n)
        SELECT CASE WHEN hour >= 0 THEN hour / 24 ELSE (hour - 23) / 24 END,
               key, outcome, explore, sum(n)
        FROM context_rollup_hourly GROUP BY 1, 2, 3, 4;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

#: Migrations (by index) that change tables an older learnkit still writes to:
#: a process of that version, still running, would have its writes refused (a
#: view cannot be written) or miss the new tables. They run only when no other
#: live session has the file open.
EXCLUSIVE = frozenset({4, 5})
