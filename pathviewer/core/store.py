"""Crash-safe project store: one folder holding ``project.sqlite``.

A project keeps everything an annotator produces: slides, region annotations, the class palette,
patch labels (from annotators, models or imports), review decisions with their full history, the
review queue of a label-refinement run, and training runs.

Durability
    The database runs in WAL mode with ``synchronous=FULL`` and foreign keys on.  Every public
    method that changes something is one transaction, committed before it returns, so there is no
    Save button: killing the process at any moment loses no edit whose method returned.
    Several edits can be grouped atomically with ``with project.transaction(): ...``.

Schema versions
    ``PRAGMA user_version`` holds the schema version; :data:`MIGRATIONS` are applied in order when
    a project is opened, each in its own transaction, so an older project is upgraded in place.

Threads
    Each thread gets its own SQLite connection (opened lazily), so a :class:`Project` may be shared
    between the GUI thread and worker threads; SQLite serialises the writers (``busy_timeout``
    5 s).  Records returned are plain frozen dataclasses, safe to pass between threads.

Coordinates
    Geometries and boxes are in level-0 pixels of their slide; geometries are stored as WKB with
    their bounding box, so :meth:`Project.annotations` can filter a viewport in SQL.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sqlite3
import statistics
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

from pathviewer.core.annotations import DEFAULT_CLASSES, Annotation, rgb_from_hex, valid_rgb
from pathviewer.core.atomic import atomic_write
from pathviewer.core.errors import PathViewerError
from pathviewer.core.patch_tables import LABEL_COLUMNS, FlagRow, read_flags

#: File name of the database inside a project folder.
DB_NAME = "project.sqlite"

#: Where a patch label came from.
SOURCES = ("annotator", "model", "imported")

#: A pathologist's status of a whole slide in the triage queue: looked at, agrees with the
#: model's call, disagrees with it.
SLIDE_STATUSES = ("reviewed", "agree", "disagree")

#: Review decisions: accept the suggestion, keep the given label, assign another, unsure.
DECISIONS = ("accept", "keep", "assign", "unsure")

#: Schema migrations; ``MIGRATIONS[i]`` upgrades a database from version ``i`` to ``i + 1``.
MIGRATIONS: list[str] = [
    # v1: the core tables.
    """
    CREATE TABLE slides (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        label TEXT,
        split TEXT,
        added TEXT NOT NULL
    );
    CREATE TABLE classes (
        name TEXT PRIMARY KEY,
        color TEXT NOT NULL
    );
    CREATE TABLE annotations (
        id INTEGER PRIMARY KEY,
        slide_id INTEGER NOT NULL REFERENCES slides(id) ON DELETE CASCADE,
        geometry BLOB NOT NULL,
        min_x REAL NOT NULL, min_y REAL NOT NULL, max_x REAL NOT NULL, max_y REAL NOT NULL,
        class_name TEXT,
        color TEXT,
        name TEXT,
        object_type TEXT NOT NULL DEFAULT 'annotation',
        author TEXT,
        created TEXT NOT NULL,
        modified TEXT NOT NULL
    );
    CREATE INDEX annotations_slide ON annotations(slide_id, min_x, max_x);
    CREATE TABLE patch_labels (
        id INTEGER PRIMARY KEY,
        slide_id INTEGER NOT NULL REFERENCES slides(id) ON DELETE CASCADE,
        x INTEGER NOT NULL, y INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
        label TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('annotator', 'model', 'imported')),
        trusted INTEGER NOT NULL DEFAULT 0 CHECK (trusted IN (0, 1)),
        author TEXT,
        created TEXT NOT NULL
    );
    CREATE INDEX patch_labels_box ON patch_labels(slide_id, x, y, width, height);
    CREATE TABLE reviews (
        id INTEGER PRIMARY KEY,
        patch_label_id INTEGER NOT NULL REFERENCES patch_labels(id) ON DELETE CASCADE,
        decision TEXT NOT NULL CHECK (decision IN ('accept', 'keep', 'assign', 'unsure')),
        label TEXT,
        author TEXT,
        decided_at TEXT NOT NULL
    );
    CREATE INDEX reviews_label ON reviews(patch_label_id);
    CREATE TABLE training_runs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        path TEXT,
        config TEXT NOT NULL DEFAULT '{}',
        created TEXT NOT NULL,
        status TEXT NOT NULL
    );
    """,
    # v2: the review queue of a label-refinement run (flags.csv), ranked by suspicion.
    """
    CREATE TABLE flags (
        id INTEGER PRIMARY KEY,
        rank INTEGER NOT NULL,
        patch_label_id INTEGER NOT NULL REFERENCES patch_labels(id) ON DELETE CASCADE,
        given TEXT NOT NULL,
        suggested TEXT NOT NULL,
        confidence REAL,
        g REAL,
        run_id INTEGER REFERENCES training_runs(id) ON DELETE SET NULL,
        imported TEXT NOT NULL
    );
    CREATE INDEX flags_rank ON flags(rank);
    CREATE INDEX flags_label ON flags(patch_label_id);
    """,
    # v3: what QuPath writes of an object and a stable identifier: the UUID written as the
    # GeoJSON feature id, the lock, and metadata + measurements (JSON). Annotations stored
    # before it read with a UUID derived from their row (the same on every read).
    """
    ALTER TABLE annotations ADD COLUMN uid TEXT;
    ALTER TABLE annotations ADD COLUMN locked INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE annotations ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
    """,
    # v4: a pathologist's triage of whole slides (reviewed / agree / disagree with the model,
    # with a note); every decision is kept, the newest is the slide's status.
    """
    CREATE TABLE slide_reviews (
        id INTEGER PRIMARY KEY,
        slide_id INTEGER NOT NULL REFERENCES slides(id) ON DELETE CASCADE,
        status TEXT NOT NULL CHECK (status IN ('reviewed', 'agree', 'disagree')),
        note TEXT NOT NULL DEFAULT '',
        score REAL,
        author TEXT,
        decided_at TEXT NOT NULL
    );
    CREATE INDEX slide_reviews_slide ON slide_reviews(slide_id, id);
    """,
    # v5: accountable review: whether the annotator saw the model's suggestion before deciding
    # (blind mode hides it) and how long the decision took.  NULL in decisions made before.
    """
    ALTER TABLE reviews ADD COLUMN suggestion_shown INTEGER;
    ALTER TABLE reviews ADD COLUMN seconds REAL;
    """,
    # v6: several reviewers.  When reviewers disagree on a patch, an adjudicator's decision
    # settles it; the patch stays untrusted until then.
    """
    CREATE TABLE adjudications (
        id INTEGER PRIMARY KEY,
        patch_label_id INTEGER NOT NULL REFERENCES patch_labels(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        author TEXT,
        note TEXT NOT NULL DEFAULT '',
        decided_at TEXT NOT NULL
    );
    CREATE INDEX adjudications_label ON adjudications(patch_label_id, id);
    """,
    # v7: undo without losing the audit trail.  A decision taken back is marked retracted
    # (when, by whom) instead of deleted, and each decision keeps the patch label's state
    # before it, so retracting the first one restores the label it questioned.  Readers of
    # decisions ignore retracted ones.  Decisions made before have NULL in all four.
    """
    ALTER TABLE reviews ADD COLUMN retracted_at TEXT;
    ALTER TABLE reviews ADD COLUMN retracted_by TEXT;
    ALTER TABLE reviews ADD COLUMN label_before TEXT;
    ALTER TABLE reviews ADD COLUMN trusted_before INTEGER;
    ALTER TABLE adjudications ADD COLUMN retracted_at TEXT;
    ALTER TABLE adjudications ADD COLUMN retracted_by TEXT;
    ALTER TABLE adjudications ADD COLUMN label_before TEXT;
    ALTER TABLE adjudications ADD COLUMN trusted_before INTEGER;
    """,
]

#: The schema version this code writes.
SCHEMA_VERSION = len(MIGRATIONS)


class ProjectError(PathViewerError):
    """A project folder cannot be created or opened, or an edit refers to something absent."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SlideRecord:
    """A slide of the project."""

    id: int
    path: str
    name: str
    label: str | None
    split: str | None
    added: str


@dataclass(frozen=True)
class AnnotationRecord:
    """A stored annotation with its bookkeeping."""

    id: int
    slide_id: int
    annotation: Annotation
    author: str | None
    created: str
    modified: str


@dataclass(frozen=True)
class PatchLabelRecord:
    """A labelled patch box of a slide."""

    id: int
    slide_id: int
    slide_path: str
    x: int
    y: int
    width: int
    height: int
    label: str
    source: str
    trusted: bool
    author: str | None
    created: str


@dataclass(frozen=True)
class ReviewRecord:
    """One review decision on a patch label (the history keeps all of them)."""

    id: int
    patch_label_id: int
    decision: str
    label: str | None
    author: str | None
    decided_at: str
    #: Whether the suggestion was on screen when deciding (None: not recorded).
    suggestion_shown: bool | None = None
    #: Seconds from the patch being shown to the decision (None: not recorded).
    seconds: float | None = None
    #: When the decision was taken back (None: it stands); retracted decisions count nowhere.
    retracted_at: str | None = None
    #: Who took it back.
    retracted_by: str | None = None


@dataclass(frozen=True)
class SlideReviewRecord:
    """One triage decision on a slide (the history keeps all of them).

    ``score`` is the model's slide score the pathologist saw when deciding (None if none).
    """

    id: int
    slide_id: int
    status: str
    note: str
    score: float | None
    author: str | None
    decided_at: str


@dataclass(frozen=True)
class FlagRecord:
    """One entry of the review queue: a patch whose label a refinement run finds suspect."""

    id: int
    rank: int
    patch_label_id: int
    slide_id: int
    slide_path: str
    x: int
    y: int
    width: int
    height: int
    given: str
    suggested: str
    confidence: float | None
    g: float | None
    current_label: str
    trusted: bool
    reviewed: bool


@dataclass(frozen=True)
class RunRecord:
    """A training run registered in the project."""

    id: int
    kind: str
    path: str | None
    config: dict[str, Any]
    created: str
    status: str


# --------------------------------------------------------------------------- helpers


def _edit_failure(error: sqlite3.OperationalError) -> str:
    """Why an edit could not be written, in words."""
    text = str(error)
    if "locked" in text or "busy" in text:
        return "the project is locked by another program (another PathViewer?)"
    if "full" in text:
        return "the disk is full"
    if "readonly" in text or "read-only" in text:
        return "the project folder is read-only"
    return f"could not write ({text})"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _hex(color: Sequence[int] | None, db_path: Path) -> str | None:
    if color is None:
        return None
    rgb = valid_rgb(color)
    if rgb is None:  # refused here so that nothing unreadable is ever stored
        raise ProjectError(f"{db_path}: colour {color!r} is not [r, g, b] with components 0-255")
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _rgb(value: str | None) -> tuple[int, int, int] | None:
    # A malformed stored colour (older versions stored e.g. "#12c-53e8") reads as "no colour of
    # its own": the class colour is drawn, rather than the whole slide failing to load.
    return rgb_from_hex(value)


def _geometry_columns(geometry: BaseGeometry) -> tuple[bytes, float, float, float, float]:
    if geometry.is_empty:
        raise ProjectError("cannot store an empty geometry")
    min_x, min_y, max_x, max_y = geometry.bounds
    return shapely.to_wkb(geometry), min_x, min_y, max_x, max_y


def schema_version(connection: sqlite3.Connection) -> int:
    """The ``PRAGMA user_version`` of a database."""
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def migrate(connection: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply the pending :data:`MIGRATIONS` up to ``target``, each in one transaction.

    Returns
    -------
    int
        The version after migrating.

    Raises
    ------
    ProjectError
        The database is newer than this version of PathViewer knows.
    """
    version = schema_version(connection)
    if version > SCHEMA_VERSION:
        raise ProjectError(
            f"project schema version {version} is newer than this PathViewer ({SCHEMA_VERSION}); "
            "update PathViewer"
        )
    while version < target:
        # One transaction per step: the DDL and the version bump commit together (SQLite DDL is
        # transactional), and the version is re-read under the write lock so that two
        # connections opening an old project at once do not both apply a step.
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = schema_version(connection)
            if version < target:
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        connection.execute(statement)
                version += 1
                connection.execute(f"PRAGMA user_version = {version}")
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
    return version


# --------------------------------------------------------------------------- project


class Project:
    """A project folder with its SQLite store.  Use :meth:`create` or :meth:`open`.

    Parameters
    ----------
    folder
        The project folder (holding ``project.sqlite``).
    """

    #: Seconds an edit waits for another process's write lock before it gives up.
    busy_timeout = 5.0

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.db_path = self.folder / DB_NAME
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._listeners: list[Callable[[str, list[int]], None]] = []

    # ---- lifecycle

    @classmethod
    def create(cls, folder: str | os.PathLike[str]) -> Project:
        """Create a new project in ``folder`` (created if needed; must not hold a project yet).

        The class palette starts with :data:`~pathviewer.core.annotations.DEFAULT_CLASSES`.
        """
        folder = Path(folder)
        if (folder / DB_NAME).exists():
            raise ProjectError(f"{folder}: already holds a project")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ProjectError(f"{folder}: cannot create the project folder ({error})") from None
        project = cls(folder)
        project._connect()
        with project.transaction() as conn:
            conn.executemany(
                "INSERT INTO classes(name, color) VALUES (?, ?)",
                [(name, _hex(rgb, project.db_path)) for name, rgb in DEFAULT_CLASSES.items()],
            )
        return project

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> Project:
        """Open an existing project, upgrading its schema when it is older.

        Raises
        ------
        ProjectError
            No project there, not a SQLite database, or a newer schema.
        """
        folder = Path(folder)
        if not (folder / DB_NAME).is_file():
            raise ProjectError(f"{folder}: no {DB_NAME} here (not a PathViewer project)")
        if (folder / DB_NAME).stat().st_size == 0:
            # SQLite would open an empty file as a new database: an empty, class-less project
            # where the user's data was expected.
            raise ProjectError(
                f"{folder / DB_NAME}: the file is empty (0 bytes), not a PathViewer project;"
                " restore it from a backup, or remove it to start a new project here"
            )
        project = cls(folder)
        project._connect()
        return project

    def close(self) -> None:
        """Close every connection this project opened (edits are already committed)."""
        with self._connections_lock:
            for connection in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    connection.close()
            self._connections.clear()
        self._local = threading.local()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so each edit is exactly one
            # transaction.  check_same_thread=False only so that close() can close connections
            # of other threads; each thread still uses only its own.
            connection = sqlite3.connect(
                self.db_path,
                isolation_level=None,
                timeout=self.busy_timeout,
                check_same_thread=False,
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA foreign_keys=ON")
            migrate(connection)
        except sqlite3.DatabaseError as error:
            raise ProjectError(f"{self.db_path}: not a usable project database ({error})") from None
        self._local.connection = connection
        self._local.depth = 0
        with self._connections_lock:
            self._connections.append(connection)
        return connection

    @property
    def connection(self) -> sqlite3.Connection:
        """This thread's connection (read-only use outside :meth:`transaction`, please)."""
        return self._connect()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable edit: committed on success, rolled back on any exception.

        Nested uses join the outermost transaction.
        """
        connection = self._connect()
        if self._local.depth:
            self._local.depth += 1
            try:
                yield connection
            finally:
                self._local.depth -= 1
            return
        self._local.depth = 1
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            else:
                connection.execute("COMMIT")
        except sqlite3.OperationalError as error:
            # A lock held by another process, a full disk, a read-only folder: the edit was
            # rolled back as a whole, and the user gets one line that says so.
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            raise ProjectError(
                f"{self.db_path}: {_edit_failure(error)}; nothing was saved"
            ) from None
        finally:
            self._local.depth = 0

    def add_listener(self, callback: Callable[[str, list[int]], None]) -> None:
        """Call ``callback(what, ids)`` after each committed edit (``what`` like ``annotations``).

        Called in the editing thread; a GUI should re-post to its own thread.
        """
        self._listeners.append(callback)

    def _notify(self, what: str, ids: list[int]) -> None:
        for callback in list(self._listeners):
            callback(what, ids)

    @contextlib.contextmanager
    def _edit(self, what: str, ids: list[int]) -> Iterator[sqlite3.Connection]:
        # Integrity errors (foreign keys, CHECKs) become ProjectErrors the UI can show.
        try:
            with self.transaction() as connection:
                yield connection
        except sqlite3.IntegrityError as error:
            raise ProjectError(f"{self.db_path}: {what}: {error}") from None
        if not self._local.depth:
            self._notify(what, ids)

    # ---- classes

    def classes(self) -> dict[str, tuple[int, int, int]]:
        """The class palette, name -> RGB, in insertion order."""
        rows = self.connection.execute("SELECT name, color FROM classes ORDER BY rowid")
        return {name: _rgb(color) or (128, 128, 128) for name, color in rows}

    def set_class(self, name: str, color: Sequence[int]) -> None:
        """Add a class or change its colour."""
        with self._edit("classes", []) as conn:
            conn.execute(
                "INSERT INTO classes(name, color) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET color = excluded.color",
                (name, _hex(color, self.db_path)),
            )

    def delete_class(self, name: str) -> None:
        """Remove a class from the palette (annotations keep their class name)."""
        with self._edit("classes", []) as conn:
            conn.execute("DELETE FROM classes WHERE name = ?", (name,))

    # ---- slides

    def add_slide(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        label: str | None = None,
        split: str | None = None,
    ) -> int:
        """Add a slide (or return the id of the slide already stored with this path).

        Safe when several processes add the same path at once: the insert and the look-up are one
        transaction, and the path's UNIQUE constraint makes the later insert a no-op, so every
        caller gets the one stored row's id.
        """
        path = str(path)
        existing = self.slide_id(path)
        if existing is not None:
            return existing
        with self._edit("slides", []) as conn:
            conn.execute(
                "INSERT INTO slides(path, name, label, split, added) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(path) DO NOTHING",
                (path, name or Path(path).stem, label, split, _now()),
            )
            row = conn.execute("SELECT id FROM slides WHERE path = ?", (path,)).fetchone()
        return int(row[0])

    def slide_id(self, path: str | os.PathLike[str]) -> int | None:
        """The id of the slide stored with ``path``, or None."""
        row = self.connection.execute(
            "SELECT id FROM slides WHERE path = ?", (str(path),)
        ).fetchone()
        return None if row is None else int(row[0])

    def slides(self) -> list[SlideRecord]:
        """All slides, in the order they were added."""
        rows = self.connection.execute(
            "SELECT id, path, name, label, split, added FROM slides ORDER BY id"
        )
        return [SlideRecord(*row) for row in rows]

    def slide(self, slide_id: int) -> SlideRecord:
        """One slide by id."""
        row = self.connection.execute(
            "SELECT id, path, name, label, split, added FROM slides WHERE id = ?", (slide_id,)
        ).fetchone()
        if row is None:
            raise ProjectError(f"{self.db_path}: no slide with id {slide_id}")
        return SlideRecord(*row)

    def update_slide(self, slide_id: int, **fields: str | None) -> None:
        """Change a slide's ``name``, ``label`` or ``split``."""
        allowed = {"name", "label", "split"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"update_slide: unknown fields {sorted(unknown)}")
        if not fields:
            return
        assignments = ", ".join(f"{key} = ?" for key in fields)
        with self._edit("slides", [slide_id]) as conn:
            cursor = conn.execute(
                f"UPDATE slides SET {assignments} WHERE id = ?", (*fields.values(), slide_id)
            )
            if cursor.rowcount == 0:
                raise ProjectError(f"{self.db_path}: no slide with id {slide_id}")

    def remove_slide(self, slide_id: int) -> None:
        """Remove a slide with its annotations, patch labels, reviews and flags."""
        with self._edit("slides", [slide_id]) as conn:
            conn.execute("DELETE FROM slides WHERE id = ?", (slide_id,))

    # ---- annotations

    def add_annotation(
        self, slide_id: int, annotation: Annotation, author: str | None = None
    ) -> int:
        """Store an annotation of a slide; returns its id."""
        return self.add_annotations(slide_id, [annotation], author)[0]

    def add_annotations(
        self,
        slide_id: int,
        annotations: Iterable[Annotation],
        author: str | None = None,
        wanted_ids: Sequence[int] | None = None,
    ) -> list[int]:
        """Store several annotations in one transaction (all or nothing); returns their ids.

        ``wanted_ids`` (one per annotation) asks for those ids, as an undone delete does so that
        the annotation keeps its number; an id already in use gets a new one instead.
        """
        annotations = list(annotations)
        if wanted_ids is not None and len(wanted_ids) != len(annotations):
            raise ValueError("one wanted id per annotation")
        ids: list[int] = []
        now = _now()
        with self._edit("annotations", ids) as conn:
            chosen: list[int | None] = [None] * len(annotations)
            if wanted_ids:
                marks = ",".join("?" * len(wanted_ids))
                taken = {
                    int(row[0])
                    for row in conn.execute(
                        f"SELECT id FROM annotations WHERE id IN ({marks})",
                        [int(i) for i in wanted_ids],
                    )
                }
                chosen = [None if int(i) in taken else int(i) for i in wanted_ids]
            for annotation, wanted in zip(annotations, chosen, strict=True):
                wkb, *bounds = _geometry_columns(annotation.geometry)
                cursor = conn.execute(
                    "INSERT INTO annotations(id, slide_id, geometry, min_x, min_y, max_x, max_y, "
                    "class_name, color, name, object_type, author, created, modified, "
                    "uid, locked, extra) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        wanted,
                        slide_id,
                        wkb,
                        *bounds,
                        annotation.class_name,
                        _hex(annotation.color, self.db_path),
                        annotation.name,
                        annotation.object_type,
                        author,
                        now,
                        now,
                        annotation.uid or str(uuid.uuid4()),
                        int(annotation.locked),
                        _extra(annotation),
                    ),
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def update_annotation(
        self,
        annotation_id: int,
        annotation: Annotation,
        author: str | None = None,
    ) -> None:
        """Replace an annotation's geometry, class, colour and name (``modified`` is set now).

        ``author`` (when given) records who edited it last.
        """
        wkb, *bounds = _geometry_columns(annotation.geometry)
        with self._edit("annotations", [annotation_id]) as conn:
            cursor = conn.execute(
                "UPDATE annotations SET geometry = ?, min_x = ?, min_y = ?, max_x = ?, max_y = ?, "
                "class_name = ?, color = ?, name = ?, object_type = ?, "
                "author = COALESCE(?, author), modified = ?, uid = COALESCE(?, uid), "
                "locked = ?, extra = ? WHERE id = ?",
                (
                    wkb,
                    *bounds,
                    annotation.class_name,
                    _hex(annotation.color, self.db_path),
                    annotation.name,
                    annotation.object_type,
                    author,
                    _now(),
                    annotation.uid,
                    int(annotation.locked),
                    _extra(annotation),
                    annotation_id,
                ),
            )
            if cursor.rowcount == 0:
                raise ProjectError(f"{self.db_path}: no annotation with id {annotation_id}")

    def delete_annotation(self, annotation_id: int) -> None:
        """Delete one annotation (no error if it is already gone, so undo/redo stay simple)."""
        with self._edit("annotations", [annotation_id]) as conn:
            conn.execute("DELETE FROM annotations WHERE id = ?", (annotation_id,))

    def annotation(self, annotation_id: int) -> AnnotationRecord:
        """One annotation by id."""
        row = self.connection.execute(
            f"SELECT {_ANNOTATION_COLUMNS} FROM annotations WHERE id = ?", (annotation_id,)
        ).fetchone()
        if row is None:
            raise ProjectError(f"{self.db_path}: no annotation with id {annotation_id}")
        return _annotation_record(row)

    def annotations(
        self, slide_id: int, bbox: tuple[float, float, float, float] | None = None
    ) -> list[AnnotationRecord]:
        """Annotations of a slide, optionally only those intersecting ``(x0, y0, x1, y1)``."""
        sql = f"SELECT {_ANNOTATION_COLUMNS} FROM annotations WHERE slide_id = ?"
        params: list[Any] = [slide_id]
        if bbox is not None:
            x0, y0, x1, y1 = bbox
            sql += " AND max_x >= ? AND min_x <= ? AND max_y >= ? AND min_y <= ?"
            params += [x0, x1, y0, y1]
        rows = self.connection.execute(sql + " ORDER BY id", params).fetchall()
        records = [_annotation_record(row) for row in rows]
        if bbox is not None:  # bounding boxes overlap; keep those whose shapes really do
            view = shapely.box(*bbox)
            records = [r for r in records if r.annotation.geometry.intersects(view)]
        return records

    def import_annotations(
        self, slide_id: int, path: str | os.PathLike[str], author: str | None = None
    ) -> list[int]:
        """Import a GeoJSON or ASAP XML file into a slide, all or nothing."""
        from pathviewer.core.annotations import read_annotations

        return self.add_annotations(slide_id, read_annotations(path), author)

    def export_annotations(self, slide_id: int, path: str | os.PathLike[str]) -> int:
        """Export a slide's annotations to GeoJSON or ASAP XML (by extension); returns the count."""
        from pathviewer.core.annotations import write_annotations

        annotations = [r.annotation for r in self.annotations(slide_id)]
        write_annotations(path, annotations)
        return len(annotations)

    # ---- patch labels

    def add_patch_labels(
        self,
        rows: Iterable[Sequence[Any] | Mapping[str, Any]],
        source: str,
        author: str | None = None,
        trusted: bool | None = None,
    ) -> list[int]:
        """Store patch labels in one transaction; returns their ids.

        Parameters
        ----------
        rows
            ``(slide, x, y, width, height, label)`` tuples or mappings with those keys; ``slide``
            is a slide id (int) or a path (str; the slide is added when new).
        source
            ``annotator``, ``model`` or ``imported``.
        author
            Who made them.
        trusted
            Default: True for ``annotator`` labels, False otherwise.
        """
        if source not in SOURCES:
            raise ProjectError(f"patch label source {source!r} is not one of {SOURCES}")
        is_trusted = int(source == "annotator" if trusted is None else trusted)
        ids: list[int] = []
        now = _now()
        with self._edit("patch_labels", ids) as conn:
            for i, row in enumerate(rows):
                if isinstance(row, Mapping):
                    values = [row[k] for k in ("slide", "x", "y", "width", "height", "label")]
                else:
                    values = list(row)
                if len(values) != 6:
                    raise ProjectError(
                        f"patch label {i}: expected slide, x, y, width, height, label"
                    )
                slide, x, y, width, height, label = values
                try:
                    slide_id = self.add_slide(slide) if isinstance(slide, str) else int(slide)
                    box = [int(v) for v in (x, y, width, height)]
                except (TypeError, ValueError, OverflowError):
                    raise ProjectError(
                        f"patch label {i}: slide {slide!r} and box {x!r}, {y!r}, {width!r}, "
                        f"{height!r} must be a slide and whole numbers"
                    ) from None
                cursor = conn.execute(
                    "INSERT INTO patch_labels(slide_id, x, y, width, height, label, source, "
                    "trusted, author, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        slide_id,
                        *box,
                        str(label),
                        source,
                        is_trusted,
                        author,
                        now,
                    ),
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def patch_labels(
        self,
        slide_id: int | None = None,
        trusted: bool | None = None,
        source: str | None = None,
    ) -> list[PatchLabelRecord]:
        """Patch labels, optionally of one slide, trusted or not, or of one source."""
        sql = f"SELECT {_PATCH_COLUMNS} FROM patch_labels p JOIN slides s ON s.id = p.slide_id"
        where: list[str] = []
        params: list[Any] = []
        if slide_id is not None:
            where.append("p.slide_id = ?")
            params.append(slide_id)
        if trusted is not None:
            where.append("p.trusted = ?")
            params.append(int(trusted))
        if source is not None:
            where.append("p.source = ?")
            params.append(source)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.connection.execute(sql + " ORDER BY p.id", params)
        return [_patch_record(row) for row in rows]

    def patch_label(self, patch_label_id: int) -> PatchLabelRecord:
        """One patch label by id."""
        row = self.connection.execute(
            f"SELECT {_PATCH_COLUMNS} FROM patch_labels p JOIN slides s ON s.id = p.slide_id "
            "WHERE p.id = ?",
            (patch_label_id,),
        ).fetchone()
        if row is None:
            raise ProjectError(f"{self.db_path}: no patch label with id {patch_label_id}")
        return _patch_record(row)

    # ---- reviews

    def record_review(
        self,
        patch_label_id: int,
        decision: str,
        label: str | None = None,
        author: str | None = None,
        suggestion_shown: bool | None = None,
        seconds: float | None = None,
    ) -> int:
        """Record a review decision and apply it to the patch label; returns the review id.

        ``suggestion_shown`` (False in blind review) and ``seconds`` are kept for the
        automation-bias report (:meth:`suggestion_agreement`).

        ``accept`` sets the label to the flag's suggestion (or ``label`` when given), ``keep``
        keeps the current label, ``assign`` sets ``label`` (required); these three make the patch
        label trusted.  ``unsure`` changes nothing but the history and leaves it untrusted.
        Every decision is kept, so :meth:`review_history` shows who decided what and when;
        :meth:`retract_review` takes one back.
        """
        if decision not in DECISIONS:
            raise ProjectError(f"review decision {decision!r} is not one of {DECISIONS}")
        with self._edit("reviews", [patch_label_id]) as conn:
            current = conn.execute(
                "SELECT label, trusted FROM patch_labels WHERE id = ?", (patch_label_id,)
            ).fetchone()
            if current is None:
                raise ProjectError(f"{self.db_path}: no patch label with id {patch_label_id}")
            if decision == "accept" and label is None:
                suggestion = conn.execute(
                    "SELECT suggested FROM flags WHERE patch_label_id = ? ORDER BY id DESC LIMIT 1",
                    (patch_label_id,),
                ).fetchone()
                if suggestion is None:
                    raise ProjectError(
                        f"patch label {patch_label_id}: nothing suggested to accept; give a label"
                    )
                label = suggestion[0]
            elif decision == "keep":
                # The label the flag questioned, not whatever an earlier reviewer set it to:
                # with several reviewers, "keep" by one must not read as agreeing with another.
                given = conn.execute(
                    "SELECT given FROM flags WHERE patch_label_id = ? ORDER BY id DESC LIMIT 1",
                    (patch_label_id,),
                ).fetchone()
                label = given[0] if given is not None else current[0]
            elif decision == "assign" and not label:
                raise ProjectError(f"patch label {patch_label_id}: 'assign' needs a label")
            shown = None if suggestion_shown is None else int(bool(suggestion_shown))
            cursor = conn.execute(
                "INSERT INTO reviews(patch_label_id, decision, label, author, decided_at, "
                "suggestion_shown, seconds, label_before, trusted_before) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    patch_label_id,
                    decision,
                    label,
                    author,
                    _now(),
                    shown,
                    seconds,
                    current[0],
                    int(current[1]),
                ),
            )
            self._apply_decisions(conn, patch_label_id)
        return int(cursor.lastrowid or 0)

    def retract_review(self, review_id: int, author: str | None = None) -> None:
        """Take a review decision back (undo): it stays in the history, marked retracted.

        The patch label returns to what the decisions still standing make it (the label the
        flag questioned, untrusted, when none is left), and every reader of decisions (trusted
        labels, agreement, the adjudication queue, the review report) ignores the retracted one.
        The audit trail shows the decision and its retraction.

        Raises
        ------
        ProjectError
            No such review, or it is retracted already.
        """
        self._retract("reviews", "review decision", review_id, author)

    def retract_adjudication(self, adjudication_id: int, author: str | None = None) -> None:
        """Take an adjudication back (undo), like :meth:`retract_review`: the patch is
        disputed again unless other decisions settle it.

        Raises
        ------
        ProjectError
            No such adjudication, or it is retracted already.
        """
        self._retract("adjudications", "adjudication", adjudication_id, author)

    def _retract(self, table: str, what: str, decision_id: int, author: str | None) -> None:
        """Mark decision ``decision_id`` of ``table`` (reviews or adjudications) retracted."""
        if table not in ("reviews", "adjudications"):
            raise ValueError(f"no decisions in {table!r}")
        with self._edit(table, []) as conn:
            row = conn.execute(
                f"SELECT patch_label_id, retracted_at FROM {table} WHERE id = ?",
                (decision_id,),
            ).fetchone()
            if row is None:
                raise ProjectError(f"{self.db_path}: no {what} with id {decision_id}")
            if row[1] is not None:
                raise ProjectError(f"{what} {decision_id} was retracted at {row[1]}")
            conn.execute(
                f"UPDATE {table} SET retracted_at = ?, retracted_by = ? WHERE id = ?",
                (_now(), author, decision_id),
            )
            self._apply_decisions(conn, int(row[0]))

    def _apply_decisions(self, conn: sqlite3.Connection, patch_label_id: int) -> None:
        """Set a patch label's label and trust from its standing decisions (the one rule).

        The newest standing review gives the label (``unsure`` gives none and leaves the patch
        untrusted); the patch is trusted when every reviewer gave the same label.  A standing
        adjudication stands over every review.  With no standing decision the patch label is
        as it was before its first decision.
        """
        adjudicated = self._adjudicated(conn, patch_label_id)
        if adjudicated is not None:
            label, trusted = adjudicated, True
        else:
            label, trusted = self._state_before_decisions(conn, patch_label_id)
            reviews = conn.execute(
                "SELECT decision, label FROM reviews WHERE patch_label_id = ? "
                "AND retracted_at IS NULL ORDER BY id",
                (patch_label_id,),
            ).fetchall()
            for decision, decided in reviews:
                if decision == "unsure":
                    trusted = False
                else:
                    label, trusted = decided, True
            if reviews and trusted:
                trusted = self._settled(conn, patch_label_id)
        conn.execute(
            "UPDATE patch_labels SET label = ?, trusted = ? WHERE id = ?",
            (label, int(trusted), patch_label_id),
        )

    @staticmethod
    def _state_before_decisions(conn: sqlite3.Connection, patch_label_id: int) -> tuple[str, bool]:
        """``(label, trusted)`` of a patch label before any decision on it.

        Kept with each decision since schema v7; for a patch first decided before that, the
        label its flag questioned (else its current label), untrusted as the queue held it.
        """
        first = conn.execute(
            "SELECT label_before, trusted_before, decided_at FROM reviews "
            "WHERE patch_label_id = ? UNION ALL "
            "SELECT label_before, trusted_before, decided_at FROM adjudications "
            "WHERE patch_label_id = ? ORDER BY 3 LIMIT 1",
            (patch_label_id, patch_label_id),
        ).fetchone()
        if first is not None and first[0] is not None:
            return str(first[0]), bool(first[1])
        given = conn.execute(
            "SELECT given FROM flags WHERE patch_label_id = ? ORDER BY id DESC LIMIT 1",
            (patch_label_id,),
        ).fetchone()
        if given is None:
            given = conn.execute(
                "SELECT label FROM patch_labels WHERE id = ?", (patch_label_id,)
            ).fetchone()
        return str(given[0]), False

    @staticmethod
    def _reviewer_labels(conn: sqlite3.Connection, patch_label_id: int) -> dict[str, str]:
        """Each reviewer's latest standing label of a patch (``unsure`` gives none)."""
        rows = conn.execute(
            "SELECT COALESCE(author, ''), decision, label FROM reviews "
            "WHERE patch_label_id = ? AND retracted_at IS NULL ORDER BY id",
            (patch_label_id,),
        )
        latest: dict[str, str | None] = {}
        for author, decision, label in rows:
            latest[author] = None if decision == "unsure" else label
        return {author: label for author, label in latest.items() if label is not None}

    def _settled(self, conn: sqlite3.Connection, patch_label_id: int) -> bool:
        """Whether every reviewer of a patch gave it the same label."""
        return len(set(self._reviewer_labels(conn, patch_label_id).values())) <= 1

    @staticmethod
    def _adjudicated(conn: sqlite3.Connection, patch_label_id: int) -> str | None:
        row = conn.execute(
            "SELECT label FROM adjudications WHERE patch_label_id = ? AND retracted_at IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (patch_label_id,),
        ).fetchone()
        return None if row is None else str(row[0])

    def disputed(self) -> dict[int, dict[str, str]]:
        """Patches on which reviewers disagree and no adjudication has settled it.

        Returns
        -------
        dict
            ``{patch label id: {reviewer: label}}``, the adjudication queue.
        """
        conn = self.connection
        ids = [
            int(row[0])
            for row in conn.execute(
                "SELECT patch_label_id FROM reviews WHERE retracted_at IS NULL "
                "GROUP BY patch_label_id HAVING COUNT(DISTINCT COALESCE(author, '')) > 1"
            )
        ]
        out = {}
        for patch_label_id in ids:
            labels = self._reviewer_labels(conn, patch_label_id)
            if len(set(labels.values())) > 1 and self._adjudicated(conn, patch_label_id) is None:
                out[patch_label_id] = labels
        return out

    def adjudicate(
        self, patch_label_id: int, label: str, author: str | None = None, note: str = ""
    ) -> int:
        """Settle a disputed patch: ``label`` becomes its trusted label; returns the id."""
        if not label:
            raise ProjectError(f"patch label {patch_label_id}: an adjudication needs a label")
        with self._edit("adjudications", [patch_label_id]) as conn:
            current = conn.execute(
                "SELECT label, trusted FROM patch_labels WHERE id = ?", (patch_label_id,)
            ).fetchone()
            if current is None:
                raise ProjectError(f"{self.db_path}: no patch label with id {patch_label_id}")
            cursor = conn.execute(
                "INSERT INTO adjudications(patch_label_id, label, author, note, decided_at, "
                "label_before, trusted_before) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (patch_label_id, label, author, note, _now(), current[0], int(current[1])),
            )
            self._apply_decisions(conn, patch_label_id)
        return int(cursor.lastrowid or 0)

    def reviewer_labels(self) -> dict[int, dict[str, str]]:
        """Every reviewed patch's latest label by each reviewer: ``{patch id: {who: label}}``."""
        conn = self.connection
        ids = [
            int(r[0])
            for r in conn.execute(
                "SELECT DISTINCT patch_label_id FROM reviews WHERE retracted_at IS NULL"
            )
        ]
        return {i: labels for i in ids if (labels := self._reviewer_labels(conn, i))}

    def record_slide_review(
        self,
        slide_id: int,
        status: str,
        note: str = "",
        score: float | None = None,
        author: str | None = None,
    ) -> int:
        """Record a triage decision on a slide (one of :data:`SLIDE_STATUSES`); returns its id."""
        if status not in SLIDE_STATUSES:
            raise ProjectError(f"slide status {status!r} is not one of {SLIDE_STATUSES}")
        with self._edit("slide_reviews", [slide_id]) as conn:
            if conn.execute("SELECT 1 FROM slides WHERE id = ?", (slide_id,)).fetchone() is None:
                raise ProjectError(f"{self.db_path}: no slide with id {slide_id}")
            cursor = conn.execute(
                "INSERT INTO slide_reviews(slide_id, status, note, score, author, decided_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (slide_id, status, note, score, author, _now()),
            )
        return int(cursor.lastrowid or 0)

    def slide_reviews(self) -> dict[int, SlideReviewRecord]:
        """The newest triage decision of every slide that has one, by slide id."""
        rows = self.connection.execute(
            "SELECT r.id, r.slide_id, r.status, r.note, r.score, r.author, r.decided_at "
            "FROM slide_reviews r JOIN (SELECT slide_id, MAX(id) AS id FROM slide_reviews "
            "GROUP BY slide_id) newest ON r.id = newest.id"
        )
        return {int(row[1]): SlideReviewRecord(*row) for row in rows}

    def slide_review_history(self, slide_id: int) -> list[SlideReviewRecord]:
        """Every triage decision on a slide, oldest first."""
        rows = self.connection.execute(
            "SELECT id, slide_id, status, note, score, author, decided_at FROM slide_reviews "
            "WHERE slide_id = ? ORDER BY id",
            (slide_id,),
        )
        return [SlideReviewRecord(*row) for row in rows]

    def review_history(self, patch_label_id: int) -> list[ReviewRecord]:
        """Every decision on a patch label, oldest first, retracted ones included (marked)."""
        rows = self.connection.execute(
            "SELECT id, patch_label_id, decision, label, author, decided_at, suggestion_shown, "
            "seconds, retracted_at, retracted_by FROM reviews WHERE patch_label_id = ? "
            "ORDER BY id",
            (patch_label_id,),
        )
        return [
            ReviewRecord(
                int(row[0]),
                int(row[1]),
                str(row[2]),
                row[3],
                row[4],
                str(row[5]),
                None if row[6] is None else bool(row[6]),
                row[7],
                row[8],
                row[9],
            )
            for row in rows
        ]

    def suggestion_agreement(self) -> dict[str, dict[str, float | int | None]]:
        """How often decisions matched the model's suggestion, with and without seeing it.

        Automation bias shows as a higher agreement when the suggestion was shown than in
        blind review of comparable patches.  Counted: ``accept``, ``keep`` and ``assign``
        decisions on flagged patches (``unsure`` is no label).

        Returns
        -------
        dict
            ``{"shown": ..., "blind": ..., "unrecorded": ...}``, each with ``decisions``,
            ``agree`` (the label decided was the suggestion), ``rate`` (None without
            decisions) and ``median_seconds`` (None without timings).
        """
        rows = self.connection.execute(
            "SELECT r.suggestion_shown, r.label, r.seconds, "
            "(SELECT f.suggested FROM flags f WHERE f.patch_label_id = r.patch_label_id "
            " ORDER BY f.id DESC LIMIT 1) FROM reviews r "
            "WHERE r.decision != 'unsure' AND r.retracted_at IS NULL"
        ).fetchall()
        groups: dict[str, list[tuple[bool, float | None]]] = {
            "shown": [],
            "blind": [],
            "unrecorded": [],
        }
        for shown, label, seconds, suggested in rows:
            if suggested is None:
                continue  # not a flagged patch: there was no suggestion to follow
            group = "unrecorded" if shown is None else ("shown" if shown else "blind")
            groups[group].append((label == suggested, seconds))
        report: dict[str, dict[str, float | int | None]] = {}
        for group, decisions in groups.items():
            times = sorted(t for _, t in decisions if t is not None)
            agree = sum(a for a, _ in decisions)
            report[group] = {
                "decisions": len(decisions),
                "agree": agree,
                "rate": agree / len(decisions) if decisions else None,
                "median_seconds": float(statistics.median(times)) if times else None,
            }
        return report

    # ---- review queue (flags of a label-refinement run)

    def import_flags(self, flags_csv: str | os.PathLike[str], run_id: int | None = None) -> int:
        """Load a refinement run's ``flags.csv`` into the review queue; returns the row count.

        The table is read by :func:`~pathviewer.core.patch_tables.read_flags`.  All or nothing:
        a bad row raises :class:`~pathviewer.core.errors.CohortError` naming it and nothing is
        imported.
        """
        return self.add_flags(read_flags(flags_csv), run_id)

    def add_flags(self, flags: Sequence[FlagRow], run_id: int | None = None) -> int:
        """Add flags to the review queue in one transaction; returns how many.

        Each flag is linked to the stored patch label of its box (created as an ``imported``,
        untrusted label ``given`` when there is none).
        """
        now = _now()
        with self._edit("flags", []) as conn:
            for flag in flags:
                slide_id = self.add_slide(flag.slide)
                box = flag.box
                existing = conn.execute(
                    "SELECT id FROM patch_labels WHERE slide_id = ? AND x = ? AND y = ? "
                    "AND width = ? AND height = ? ORDER BY trusted DESC, id DESC LIMIT 1",
                    (slide_id, *box),
                ).fetchone()
                if existing is None:
                    (label_id,) = self.add_patch_labels(
                        [(slide_id, *box, flag.given)], source="imported"
                    )
                else:
                    label_id = int(existing[0])
                conn.execute(
                    "INSERT INTO flags(rank, patch_label_id, given, suggested, confidence, g, "
                    "run_id, imported) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        flag.rank,
                        label_id,
                        flag.given,
                        flag.suggested,
                        flag.confidence,
                        flag.g,
                        run_id,
                        now,
                    ),
                )
        return len(flags)

    def clear_flags(self) -> None:
        """Empty the review queue (decisions and patch labels stay)."""
        with self._edit("flags", []) as conn:
            conn.execute("DELETE FROM flags")

    def review_queue(self, only_pending: bool = True) -> list[FlagRecord]:
        """The review queue, most suspect first.

        With ``only_pending`` the flags whose patch label already has a review decision (or is
        trusted) are left out, so a queue shows only what is still to be looked at.
        """
        sql = (
            "SELECT f.id, f.rank, f.patch_label_id, p.slide_id, s.path, p.x, p.y, p.width, "
            "p.height, f.given, f.suggested, f.confidence, f.g, p.label, p.trusted, "
            "EXISTS(SELECT 1 FROM reviews r WHERE r.patch_label_id = p.id "
            "AND r.retracted_at IS NULL) "
            "FROM flags f JOIN patch_labels p ON p.id = f.patch_label_id "
            "JOIN slides s ON s.id = p.slide_id"
        )
        if only_pending:
            sql += (
                " WHERE p.trusted = 0 AND NOT EXISTS"
                "(SELECT 1 FROM reviews r WHERE r.patch_label_id = p.id AND r.retracted_at IS NULL)"
            )
        rows = self.connection.execute(sql + " ORDER BY f.rank, f.id")
        return [_flag_record(row) for row in rows]

    def review_counts(self) -> tuple[int, int]:
        """``(reviewed, left)`` over the distinct patch labels of the queue."""
        queue = self.review_queue(only_pending=False)
        labels = {f.patch_label_id: f for f in queue}
        left = sum(1 for f in labels.values() if not f.reviewed and not f.trusted)
        return len(labels) - left, left

    def export_trusted_labels_csv(
        self, path: str | os.PathLike[str], only_trusted: bool = False
    ) -> int:
        """Write the project's patch labels for training; returns the number of rows.

        Columns ``slide,x,y,width,height,label,trusted`` (``trusted`` is 1 or 0; ``slide`` is the
        path as stored), the format the label-refinement engine reads.  One row per box: the
        trusted label when there is one, else the most recent annotator/imported label.  Model
        predictions are not training labels and are left out.  ``only_trusted`` writes only
        trusted rows.  Written atomically.
        """
        chosen: dict[tuple[int, int, int, int, int], PatchLabelRecord] = {}
        for record in self.patch_labels():
            if record.source == "model" and not record.trusted:
                continue
            key = (record.slide_id, record.x, record.y, record.width, record.height)
            previous = chosen.get(key)
            # Later ids win, but an untrusted label never replaces a trusted one.
            if previous is None or record.trusted or not previous.trusted:
                chosen[key] = record
        rows = [r for r in chosen.values() if r.trusted or not only_trusted]
        rows.sort(key=lambda r: (r.slide_id, r.y, r.x, r.id))
        with atomic_write(path) as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([*LABEL_COLUMNS, "trusted"])
            for r in rows:
                writer.writerow(
                    [r.slide_path, r.x, r.y, r.width, r.height, r.label, int(r.trusted)]
                )
        return len(rows)

    #: Columns of :meth:`export_audit_csv`.
    AUDIT_COLUMNS = ("time", "author", "action", "slide", "target", "detail")

    def audit_rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """Who did what to which slide, label or annotation, and when, oldest first.

        From what the store keeps: slides added, annotations created and last modified,
        patch labels created, flags imported, every review decision (with whether the
        suggestion was shown and the seconds taken), every adjudication, the retraction of
        any of these (an undo: the decision's row stays, and a ``... retracted`` row says
        who took it back and when) and every slide triage decision.  An
        annotation's earlier shapes are not kept, only its creation and its last change.
        """
        conn = self.connection
        rows: list[tuple[str, str, str, str, str, str]] = []
        for added, path in conn.execute("SELECT added, path FROM slides"):
            rows.append((added, "", "slide added", path, "", ""))
        for created, modified, author, path, cls, uid, kind in conn.execute(
            "SELECT a.created, a.modified, a.author, s.path, a.class_name, a.uid, a.object_type "
            "FROM annotations a JOIN slides s ON s.id = a.slide_id"
        ):
            target = f"annotation {uid or ''}".strip()
            rows.append((created, author or "", f"{kind} created", path, target, cls or ""))
            if modified != created:
                rows.append((modified, author or "", f"{kind} changed", path, target, cls or ""))
        for created, author, path, x, y, w, h, label, source in conn.execute(
            "SELECT p.created, p.author, s.path, p.x, p.y, p.width, p.height, p.label, p.source "
            "FROM patch_labels p JOIN slides s ON s.id = p.slide_id"
        ):
            rows.append(
                (created, author or "", f"label from {source}", path, f"box {x},{y},{w},{h}", label)
            )
        for imported, path, x, y, w, h, given, suggested in conn.execute(
            "SELECT f.imported, s.path, p.x, p.y, p.width, p.height, f.given, f.suggested "
            "FROM flags f JOIN patch_labels p ON p.id = f.patch_label_id "
            "JOIN slides s ON s.id = p.slide_id"
        ):
            detail = f"{given} -> {suggested}"
            rows.append((imported, "", "flag imported", path, f"box {x},{y},{w},{h}", detail))
        for row in conn.execute(
            "SELECT r.decided_at, r.author, s.path, p.x, p.y, p.width, p.height, r.decision, "
            "r.label, r.suggestion_shown, r.seconds, r.retracted_at, r.retracted_by "
            "FROM reviews r JOIN patch_labels p ON p.id = r.patch_label_id "
            "JOIN slides s ON s.id = p.slide_id"
        ):
            decided, author, path, x, y, w, h, decision, label, shown, seconds = row[:11]
            retracted, retracted_by = row[11:]
            detail = label or ""
            if shown is not None:
                detail += "; suggestion shown" if shown else "; blind"
            if seconds is not None:
                detail += f"; {seconds:.1f} s"
            box = f"box {x},{y},{w},{h}"
            rows.append((decided, author or "", f"review {decision}", path, box, detail))
            if retracted is not None:
                taken_back = " ".join(filter(None, (decision, label, "of", decided)))
                rows.append(
                    (retracted, retracted_by or "", "review retracted", path, box, taken_back)
                )
        for row in conn.execute(
            "SELECT a.decided_at, a.author, s.path, p.x, p.y, p.width, p.height, a.label, a.note, "
            "a.retracted_at, a.retracted_by FROM adjudications a "
            "JOIN patch_labels p ON p.id = a.patch_label_id JOIN slides s ON s.id = p.slide_id"
        ):
            decided, author, path, x, y, w, h, label, note, retracted, retracted_by = row
            detail = label + (f"; {note}" if note else "")
            box = f"box {x},{y},{w},{h}"
            rows.append((decided, author or "", "adjudicated", path, box, detail))
            if retracted is not None:
                rows.append(
                    (
                        retracted,
                        retracted_by or "",
                        "adjudication retracted",
                        path,
                        box,
                        f"{label} of {decided}",
                    )
                )
        for decided, author, path, status, note, score in conn.execute(
            "SELECT r.decided_at, r.author, s.path, r.status, r.note, r.score "
            "FROM slide_reviews r JOIN slides s ON s.id = r.slide_id"
        ):
            detail = note + ("" if score is None else f" (score {score:.3f})")
            rows.append((decided, author or "", f"slide {status}", path, "slide", detail.strip()))
        rows.sort(key=lambda row: row[0])
        return rows

    def export_disputed_csv(self, path: str | os.PathLike[str]) -> int:
        """Write the adjudication queue (:meth:`disputed`) as CSV; returns the row count.

        Columns ``patch_label_id,slide,x,y,width,height,labels`` where ``labels`` lists
        ``reviewer=label`` pairs separated by ``;``.
        """
        disputed = self.disputed()
        records = {r.id: r for r in self.patch_labels() if r.id in disputed}
        with atomic_write(path) as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["patch_label_id", "slide", "x", "y", "width", "height", "labels"])
            for pid, labels in sorted(disputed.items()):
                r = records[pid]
                given = ";".join(
                    f"{who or '(anonymous)'}={label}" for who, label in sorted(labels.items())
                )
                writer.writerow([pid, r.slide_path, r.x, r.y, r.width, r.height, given])
        return len(disputed)

    def export_audit_csv(self, path: str | os.PathLike[str]) -> int:
        """Write :meth:`audit_rows` as CSV (atomically); returns the number of rows."""
        rows = self.audit_rows()
        with atomic_write(path) as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(self.AUDIT_COLUMNS)
            writer.writerows(rows)
        return len(rows)

    # ---- training runs

    def add_run(
        self,
        kind: str,
        path: str | os.PathLike[str] | None = None,
        config: Mapping[str, Any] | None = None,
        status: str = "running",
    ) -> int:
        """Register a training run (``kind`` like ``noisy`` or ``ngsd``); returns its id."""
        with self._edit("training_runs", []) as conn:
            cursor = conn.execute(
                "INSERT INTO training_runs(kind, path, config, created, status) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    kind,
                    None if path is None else str(path),
                    json.dumps(dict(config or {})),
                    _now(),
                    status,
                ),
            )
        return int(cursor.lastrowid or 0)

    def update_run(
        self, run_id: int, status: str | None = None, path: str | os.PathLike[str] | None = None
    ) -> None:
        """Change a run's status (``done``, ``failed``, ``cancelled``...) or output path."""
        with self._edit("training_runs", [run_id]) as conn:
            cursor = conn.execute(
                "UPDATE training_runs SET status = COALESCE(?, status), "
                "path = COALESCE(?, path) WHERE id = ?",
                (status, None if path is None else str(path), run_id),
            )
            if cursor.rowcount == 0:
                raise ProjectError(f"{self.db_path}: no training run with id {run_id}")

    def runs(self, kind: str | None = None) -> list[RunRecord]:
        """Training runs, oldest first (optionally of one kind)."""
        sql = "SELECT id, kind, path, config, created, status FROM training_runs"
        params: tuple[Any, ...] = ()
        if kind is not None:
            sql += " WHERE kind = ?"
            params = (kind,)
        rows = self.connection.execute(sql + " ORDER BY id", params)
        return [
            RunRecord(run_id, kind_, path, json.loads(config), created, status)
            for run_id, kind_, path, config, created, status in rows
        ]

    # ---- maintenance

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result (``"ok"`` when healthy)."""
        return str(self.connection.execute("PRAGMA integrity_check").fetchone()[0])


_ANNOTATION_COLUMNS = (
    "id, slide_id, geometry, class_name, color, name, object_type, author, created, modified, "
    "uid, locked, extra"
)
_PATCH_COLUMNS = (
    "p.id, p.slide_id, s.path, p.x, p.y, p.width, p.height, p.label, p.source, p.trusted, "
    "p.author, p.created"
)


def _extra(annotation: Annotation) -> str:
    """The ``extra`` column: what QuPath writes that has no column of its own."""
    extra: dict[str, Any] = {
        "metadata": dict(annotation.metadata),
        "measurements": dict(annotation.measurements),
    }
    if annotation.object_color is not None:
        extra["object_color"] = list(annotation.object_color)
    return json.dumps(extra)


def _annotation_record(row: Sequence[Any]) -> AnnotationRecord:
    (id_, slide_id, wkb, class_name, color, name, object_type, author, created, modified) = row[:10]
    uid, locked, extra_text = row[10:13]
    try:
        extra = json.loads(extra_text or "{}")
    except ValueError:
        extra = {}
    annotation = Annotation(
        geometry=shapely.from_wkb(wkb),
        class_name=class_name,
        color=_rgb(color),
        name=name,
        object_type=object_type,
        measurements={str(k): float(v) for k, v in (extra.get("measurements") or {}).items()},
        uid=uid or _legacy_uid(slide_id, id_),
        locked=bool(locked),
        metadata={str(k): str(v) for k, v in (extra.get("metadata") or {}).items()},
        object_color=valid_rgb(extra.get("object_color")),
    )
    return AnnotationRecord(id_, slide_id, annotation, author, created, modified)


def _legacy_uid(slide_id: int, annotation_id: int) -> str:
    """A stable UUID for an annotation stored before v3 (the same every time it is read)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pathviewer:annotation:{slide_id}:{annotation_id}"))


def _patch_record(row: Sequence[Any]) -> PatchLabelRecord:
    values = list(row)
    values[9] = bool(values[9])
    return PatchLabelRecord(*values)


def _flag_record(row: Sequence[Any]) -> FlagRecord:
    values = list(row)
    values[14] = bool(values[14])  # trusted
    values[15] = bool(values[15])  # reviewed
    return FlagRecord(*values)
