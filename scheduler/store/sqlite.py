"""The SQLite store: podium-scheduler's embedded default (base.Store).

One file, three tables:

    meta     name -> integer: 'revision' (of the latest write) and
             'compacted' (history keeps the changes after it)
    objects  (kind, namespace, name) -> revision, the serialized Object
    history  revision -> ADDED/MODIFIED/DELETED, key, the serialized Object

Every write is one transaction touching all three, committed with the WAL
journal and synchronous=FULL: once a call returns, the write survives the
process being killed. The file is opened in exclusive locking mode, so a
second scheduler on the same file fails at open instead of both silently
diverging (and SQLite keeps the WAL index in memory, with no -shm file).

The current objects are also held in memory, loaded at open: get and list
never touch the disk, and a write reaches the cache (then the watchers) only
after its commit. Two locks: `_write_lock` serializes writers and owns the
connection; `_state_lock` guards the cache and is held only for dict
operations, so readers never wait for a writer's fsync.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from proto.podium.v1 import cluster_pb2
from scheduler.objects import CLUSTER_SCOPED, Key, check_kind, key_of, meta, scope
from scheduler.store.base import (
    AlreadyExists,
    Change,
    Compacted,
    Conflict,
    EventType,
    NotFound,
    StoreError,
    StoreFileError,
)
from scheduler.store.hub import Hub, Replay, Watcher, node_of

SCHEMA_VERSION = 1
# Written into the file header (PRAGMA application_id): "PDM1".
APPLICATION_ID = 0x50444D31

DEFAULT_HISTORY = 10_000
DEFAULT_WATCH_BUFFER = 10_000

_SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE objects (kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,"
    " revision INTEGER NOT NULL, data BLOB NOT NULL,"
    " PRIMARY KEY (kind, namespace, name)) WITHOUT ROWID",
    "CREATE TABLE history (revision INTEGER PRIMARY KEY, type TEXT NOT NULL,"
    " kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL)",
    "INSERT INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0)",
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

# kind -> namespace -> name -> object. Cached objects are never mutated: a
# write replaces the entry, so a reader may copy one outside the lock.
_Cache = dict[str, dict[str, dict[str, cluster_pb2.Object]]]


def _copy(obj: cluster_pb2.Object) -> cluster_pb2.Object:
    copy = cluster_pb2.Object()
    copy.CopyFrom(obj)
    return copy


def _normal(key: Key) -> Key:
    return Key(check_kind(key.kind), scope(key.kind, key.namespace), key.name)


class SqliteStore:
    """base.Store on one SQLite file; `path=None` keeps it in memory (tests).

    `history` is how many revisions of changes are kept for watches to
    replay; `watch_buffer` how many live changes a watcher may fall behind
    before it is dropped.
    """

    def __init__(self, path: str | os.PathLike[str] | None, *,
                 history: int = DEFAULT_HISTORY,
                 watch_buffer: int = DEFAULT_WATCH_BUFFER) -> None:
        if history < 1:
            raise ValueError(f"history must keep at least one revision, not {history}")
        self.path = Path(path) if path is not None else None
        self._label = str(self.path) if self.path is not None else "memory store"
        self._history = history
        # Deleting old history a few hundred rows at a time keeps each
        # write's share small; small histories (tests) compact every write.
        self._compact_every = max(1, min(256, history // 8))
        self._since_compact = 0
        self._hub = Hub(watch_buffer)
        # Reentrant: writes inside batch() take it again.
        self._write_lock = threading.RLock()
        # Changes of the open batch, told to watchers once it commits.
        self._batched: list[tuple[Change, Key]] | None = None
        self._batch_broken = False
        self._state_lock = threading.Lock()
        self._closed = False
        self._conn = self._connect()
        try:
            self._revision, self._compacted, self._cache = self._load()
        except BaseException:
            self._conn.close()
            raise

    # -- opening -----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            self._create_schema(conn)
            return conn
        self._prepare_file(self.path)
        conn = sqlite3.connect(self.path, timeout=1.0, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            # Read the header before changing anything: a file that is not
            # ours is left exactly as it was.
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            fresh = app_id == 0 and tables == 0
            if not fresh and app_id != APPLICATION_ID:
                raise StoreFileError(f"{self.path}: not a podium store "
                                     f"(an SQLite database of another program)")
            if version > SCHEMA_VERSION:
                raise StoreFileError(f"{self.path}: store schema {version} is newer than "
                                     f"this podium reads ({SCHEMA_VERSION}): upgrade podium")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreFileError(f"{self.path}: cannot use the WAL journal (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            if fresh:
                self._create_schema(conn)
            # Take the exclusive lock now, so a second opener fails here.
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise self._file_error(e) from e
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare_file(self, path: Path) -> None:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if path.is_dir():
                raise StoreFileError(f"{path}: is a directory, not a store file")
            # The cluster's state (secrets in annotations, say): owner only.
            os.close(os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600))
        except OSError as e:
            raise StoreFileError(f"{path}: cannot open the store: {e.strerror}") from e

    def _file_error(self, e: sqlite3.DatabaseError) -> StoreFileError:
        text = str(e)
        if "locked" in text or "busy" in text:
            return StoreFileError(f"{self._label}: in use by another process (another scheduler?)")
        if "not a database" in text:
            return StoreFileError(f"{self._label}: not a podium store ({text})")
        return StoreFileError(f"{self._label}: {text}")

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("COMMIT")

    def _load(self) -> tuple[int, int, _Cache]:
        try:
            values = dict(self._conn.execute("SELECT name, value FROM meta").fetchall())
            rows = self._conn.execute("SELECT data FROM objects").fetchall()
        except sqlite3.DatabaseError as e:
            raise StoreFileError(f"{self._label}: damaged podium store: {e}") from e
        if "revision" not in values or "compacted" not in values:
            raise StoreFileError(f"{self._label}: damaged podium store: meta table incomplete")
        cache: _Cache = {}
        for (data,) in rows:
            obj = cluster_pb2.Object.FromString(data)
            key = key_of(obj)
            cache.setdefault(key.kind, {}).setdefault(key.namespace, {})[key.name] = obj
        return int(values["revision"]), int(values["compacted"]), cache

    # -- reads ---------------------------------------------------------------

    @property
    def watch_count(self) -> int:
        """Open watches: a client gone mid-watch must not leave one behind."""
        return self._hub.count()

    @property
    def revision(self) -> int:
        with self._state_lock:
            return self._revision

    def get(self, key: Key) -> cluster_pb2.Object:
        key = _normal(key)
        with self._state_lock:
            self._check_open()
            obj = self._lookup(key)
        if obj is None:
            raise NotFound(f"{key} not found")
        return _copy(obj)

    def list(self, kind: str, namespace: str = "") -> tuple[list[cluster_pb2.Object], int]:
        check_kind(kind)
        if kind in CLUSTER_SCOPED:
            namespace = ""
        with self._state_lock:
            self._check_open()
            by_namespace = self._cache.get(kind, {})
            if namespace:
                found = [(namespace, name, obj)
                         for name, obj in by_namespace.get(namespace, {}).items()]
            else:
                found = [(ns, name, obj) for ns, objs in by_namespace.items()
                         for name, obj in objs.items()]
            revision = self._revision
        found.sort(key=lambda item: (item[0], item[1]))
        return [_copy(obj) for _, _, obj in found], revision

    # -- writes --------------------------------------------------------------

    def create(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        key = key_of(obj)
        with self._write_lock:
            self._check_open()
            if self._lookup(key) is not None:
                raise AlreadyExists(f"{key} already exists")
            stored = self._write(EventType.ADDED, key, obj)
        return _copy(stored)

    def update(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        key = key_of(obj)
        with self._write_lock:
            self._check_open()
            current = self._lookup(key)
            if current is None:
                raise NotFound(f"{key} not found")
            self._check_version(key, current, meta(obj).resource_version)
            stored = self._write(EventType.MODIFIED, key, obj)
        return _copy(stored)

    def delete(self, key: Key, resource_version: str = "") -> cluster_pb2.Object:
        key = _normal(key)
        with self._write_lock:
            self._check_open()
            current = self._lookup(key)
            if current is None:
                raise NotFound(f"{key} not found")
            self._check_version(key, current, resource_version)
            self._write(EventType.DELETED, key, current)
        return _copy(current)

    def _check_version(self, key: Key, current: cluster_pb2.Object, wanted: str) -> None:
        stored = meta(current).resource_version
        if wanted and wanted != stored:
            raise Conflict(f"{key} was changed: resource_version {wanted} given, "
                           f"{stored} stored (read it again)")

    def _write(self, type_: EventType, key: Key, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        """Commits one change, then updates the cache and tells the watchers.
        Called with the write lock held; returns the object as stored."""
        revision = self._revision + 1
        if type_ is EventType.DELETED:
            stored = obj  # as last stored: its resource_version stays
        else:
            stored = _copy(obj)
            meta(stored).resource_version = str(revision)
        data = stored.SerializeToString()
        compact_to = self._compaction_due(revision)
        conn = self._conn
        batched = self._batched is not None
        try:
            if not batched:
                conn.execute("BEGIN IMMEDIATE")
            if type_ is EventType.DELETED:
                conn.execute("DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
                             key)
            else:
                conn.execute("INSERT OR REPLACE INTO objects (kind, namespace, name, revision,"
                             " data) VALUES (?, ?, ?, ?, ?)", (*key, revision, data))
            conn.execute("INSERT INTO history (revision, type, kind, namespace, name, data)"
                         " VALUES (?, ?, ?, ?, ?, ?)", (revision, type_.value, *key, data))
            conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
            if compact_to:
                conn.execute("DELETE FROM history WHERE revision <= ?", (compact_to,))
                conn.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (compact_to,))
            if not batched:
                conn.execute("COMMIT")
        except sqlite3.Error as e:
            if batched:
                self._batch_broken = True  # half a write: the block must not commit
            else:
                self._rollback()
            raise StoreFileError(f"{self._label}: cannot write {key}: {e}") from e
        with self._state_lock:
            by_namespace = self._cache.setdefault(key.kind, {})
            by_name = by_namespace.setdefault(key.namespace, {})
            if type_ is EventType.DELETED:
                del by_name[key.name]
                if not by_name:
                    del by_namespace[key.namespace]
            else:
                by_name[key.name] = stored
            self._revision = revision
            if compact_to:
                self._compacted = compact_to
                self._since_compact = 0
        if self._batched is not None:
            self._batched.append((Change(type_, stored, revision), key))
        else:
            self._hub.publish(Change(type_, stored, revision), key)
        return stored

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Writes in the block share one transaction, so one fsync: each is
        durable, and watchers hear of it, when the block ends. Other writers
        wait meanwhile, so keep blocks short (the placer binds a few dozen
        pods per block). Reads see the block's writes at once. An exception
        leaving the block, a write that failed half-way or a failed commit
        undoes every write of the block (the cache is reloaded from the file)."""
        with self._write_lock:
            if self._batched is not None:  # nested: the outer block commits
                yield
                return
            self._check_open()
            self._conn.execute("BEGIN IMMEDIATE")
            self._batched = []
            self._batch_broken = False
            try:
                yield
                if self._batch_broken:
                    raise StoreFileError(f"{self._label}: a write of the batch failed; "
                                         "none of it was stored")
                self._conn.execute("COMMIT")
            except BaseException as error:
                self._rollback()
                self._batched = None
                with self._state_lock:
                    self._revision, self._compacted, self._cache = self._load()
                if isinstance(error, sqlite3.Error):
                    raise StoreFileError(f"{self._label}: cannot commit a batch: {error}") \
                        from error
                raise
            changes, self._batched = self._batched, None
            for change, key in changes:
                self._hub.publish(change, key)

    def _compaction_due(self, revision: int) -> int:
        """The revision to compact history to in this write, or 0."""
        self._since_compact += 1
        target = revision - self._history
        if self._since_compact >= self._compact_every and target > self._compacted:
            return target
        return 0

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the write's own error is the one to report

    # -- watches -------------------------------------------------------------

    def watch(self, kind: str = "", namespace: str = "",
              from_revision: int | None = None, node: str = "",
              kinds: tuple[str, ...] = ()) -> Watcher:
        if kind:
            check_kind(kind)
            if kind in CLUSTER_SCOPED:
                namespace = ""
        if kinds and kind:
            raise ValueError(f"a watch of {kind} cannot also name kinds {', '.join(kinds)}")
        for each in kinds:
            check_kind(each)
        if from_revision is not None and from_revision < 0:
            raise ValueError(f"from_revision must be 0 or more, not {from_revision}")
        if node and kind != "Pod":
            raise ValueError(f"a watch by node is a watch of pods, not of {kind or 'all kinds'}")
        # Under the write lock no change can land between reading history and
        # joining the hub: replay ends where live changes begin.
        with self._write_lock:
            self._check_open()
            if from_revision is None:
                return self._hub.add(kind, namespace, self._revision, [], node, kinds)
            if from_revision < self._compacted:
                raise Compacted(f"revision {from_revision} is compacted: {self._label} keeps "
                                f"changes after revision {self._compacted}; list again")
            replay = self._replay((kind,) if kind else kinds, namespace, from_revision)
            if node:
                replay = [r for r in replay if node_of(cluster_pb2.Object.FromString(r[2])) == node]
            return self._hub.add(kind, namespace, from_revision, replay, node, kinds)

    def _replay(self, kinds: tuple[str, ...], namespace: str, after: int) -> Replay:
        """The history after ``after``, of ``kinds`` (all if none) in ``namespace``."""
        of_kinds = f" AND kind IN ({', '.join('?' * len(kinds))})" if kinds else ""
        try:
            rows = self._conn.execute(
                "SELECT revision, type, data FROM history WHERE revision > ?" + of_kinds
                + " AND (? = '' OR namespace = ?) ORDER BY revision",
                (after, *kinds, namespace, namespace)).fetchall()
        except sqlite3.Error as e:
            raise StoreFileError(f"{self._label}: cannot read history: {e}") from e
        return [(revision, EventType(type_), data) for revision, type_, data in rows]

    # -- lifetime ------------------------------------------------------------

    def close(self) -> None:
        with self._write_lock:
            with self._state_lock:
                if self._closed:
                    return
                self._closed = True
                self._cache = {}
            self._hub.close_all()
            self._conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self._label} is closed")

    def _lookup(self, key: Key) -> cluster_pb2.Object | None:
        return self._cache.get(key.kind, {}).get(key.namespace, {}).get(key.name)
