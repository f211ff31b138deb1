"""Which store a config asks for: the SQLite file, or a shared PostgreSQL server.

``LEARNKIT_DATABASE_URL`` overrides ``[storage] url`` (and ``path``): a
``postgresql://`` URL selects PostgreSQL; ``sqlite:///path`` or a plain path
selects an SQLite file. The password of a PostgreSQL store comes from the
variable named by ``storage.password_env``, else from ``PGPASSWORD`` or
``~/.pgpass`` (asyncpg reads those); it is never written anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import StoreError

if TYPE_CHECKING:
    from .._config import Config
    from .postgres import PostgresStore
    from .protocol import Store

__all__ = ["ENV_URL", "database_url", "is_postgres", "location", "postgres_store", "spill_place",
           "sqlite_path", "store_for"]

#: The environment variable that overrides the configured store.
ENV_URL = "LEARNKIT_DATABASE_URL"
_PG_SCHEMES = ("postgresql://", "postgres://")


def database_url(config: Config) -> str:
    """The store a config selects, after the environment's override: a
    ``postgresql://`` URL, or ``""`` for the SQLite file (see :func:`sqlite_path`)."""
    env = os.environ.get(ENV_URL, "").strip()
    return env or config.storage.url


def is_postgres(url: str) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL."""
    return url.startswith(_PG_SCHEMES)


def sqlite_path(config: Config) -> Path:
    """The SQLite file a config selects (``LEARNKIT_DATABASE_URL`` may name another)."""
    url = database_url(config)
    if not url or is_postgres(url):
        return config.database_path
    path = Path(url.removeprefix("sqlite://")).expanduser()
    return path if path.is_absolute() else config.path.parent / path


def spill_place(config: Config) -> tuple[Path, str]:
    """Where a store's spill files live, and the stem of their names: beside the
    SQLite file, or beside the config for a PostgreSQL store (named after it)."""
    url = database_url(config)
    if is_postgres(url):
        import hashlib

        tag = hashlib.blake2b(location(config).encode(), digest_size=4).hexdigest()
        return config.path.parent, f"learnkit-pg-{tag}"
    path = sqlite_path(config)
    return path.parent, path.name


def location(config: Config) -> str:
    """Where a config's data lives, for messages: a path, or the URL without password."""
    url = database_url(config)
    if is_postgres(url):
        from .postgres import redact_url

        return redact_url(url)
    return str(sqlite_path(config))


def store_for(config: Config, *, read_only: bool = False) -> Store:
    """A store (not yet opened) for ``config``; ``read_only``: an SQLite store that
    never migrates or writes.

    Raises:
        StoreError: ``storage.password_env`` names a variable that is not set,
            PostgreSQL is asked for and asyncpg is not installed, or ``read_only``
            is asked of a PostgreSQL store (not supported: use a read-only
            database role instead).
    """
    url = database_url(config)
    sc = config.storage
    if is_postgres(url):
        if read_only:
            from .postgres import redact_url

            raise StoreError(
                f"read_only is not supported on a PostgreSQL store ({redact_url(url)}); "
                "connect with a role that only has SELECT privileges instead"
            )
        return postgres_store(url, config)
    from .sqlite import SQLiteStore

    return SQLiteStore(sqlite_path(config), busy_timeout=sc.busy_timeout, read_only=read_only)


def postgres_store(url: str, config: Config) -> PostgresStore:
    """A PostgreSQL store at ``url``, with the password and pool size ``config`` says.

    Raises:
        StoreError: asyncpg is missing, or ``storage.password_env`` is not set.
    """
    from .postgres import PostgresStore, _asyncpg

    _asyncpg()  # the clear "pip install 'learnkit[postgres]'" error, early
    sc = config.storage
    password = None
    if sc.password_env:
        password = os.environ.get(sc.password_env)
        if password is None:
            raise StoreError(
                f"storage.password_env names {sc.password_env}, which is not set in the "
                "environment; set it to the database password"
            )
    return PostgresStore(url, password=password, pool_size=sc.pool_size,
                         lock_timeout=sc.busy_timeout)
