"""The scheduler's object store: one interface (base.Store), SQLite by default.

    open_store("sqlite:///var/lib/podium/scheduler.db")   the file at that absolute path
    open_store("/var/lib/podium/scheduler.db")             the same, as a bare path
    open_store("memory")                                   in memory, gone at close (tests)

Errors (all StoreError): NotFound, AlreadyExists, Conflict (a stale
resource_version), Compacted and TooFarBehind (a watcher must list again),
StoreFileError (the file cannot be used).
"""

from __future__ import annotations

from pathlib import Path

from scheduler.store.base import (
    AlreadyExists,
    Change,
    Compacted,
    Conflict,
    EventType,
    NotFound,
    Store,
    StoreError,
    StoreFileError,
    TooFarBehind,
    Watch,
)
from scheduler.store.sqlite import DEFAULT_HISTORY, DEFAULT_WATCH_BUFFER, SqliteStore

__all__ = [
    "AlreadyExists",
    "Change",
    "Compacted",
    "Conflict",
    "DEFAULT_HISTORY",
    "DEFAULT_WATCH_BUFFER",
    "EventType",
    "NotFound",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreFileError",
    "TooFarBehind",
    "Watch",
    "open_store",
]

_SQLITE_PREFIX = "sqlite://"


def open_store(url: str, *, history: int = DEFAULT_HISTORY,
               watch_buffer: int = DEFAULT_WATCH_BUFFER) -> Store:
    """The store `url` names: "sqlite:///abs/path.db", a bare path, or "memory".
    ValueError for anything else; StoreFileError if the file cannot be used."""
    if url == "memory":
        return SqliteStore(None, history=history, watch_buffer=watch_buffer)
    if url.startswith(_SQLITE_PREFIX):
        path = url[len(_SQLITE_PREFIX):]
        if not path.startswith("/"):
            raise ValueError(f"store URL {url!r}: want sqlite:///absolute/path.db")
    elif "://" in url or not url.strip():
        raise ValueError(f"store URL {url!r}: want sqlite:///absolute/path.db, "
                         "a file path, or 'memory'")
    else:
        path = url
    return SqliteStore(Path(path).absolute(), history=history, watch_buffer=watch_buffer)
