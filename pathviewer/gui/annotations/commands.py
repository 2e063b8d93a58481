"""Undoable annotation edits: every edit is a QUndoCommand that writes through to the store.

An :class:`AnnotationSession` ties one slide of one open :class:`~pathviewer.core.store.Project`
to the drawing layer.  Commands call the session, which commits to the store first (so an edit is
durable before it is shown) and then updates the layer's index.

An undo re-inserts a deleted annotation under its old store id when that id is still free,
but another writer may have taken it, so the id can change while commands further up or down
the stack still refer to it.  Commands therefore hold session *handles*, stable for the session's life;
:meth:`AnnotationSession.handle` gives the handle of a store id and the session maps handles to
the current store ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from PySide6.QtGui import QUndoCommand

from pathviewer.core.annotations import Annotation
from pathviewer.core.store import Project


class AnnotationSession:
    """The annotations of one slide in a project, as edited through the undo stack.

    Parameters
    ----------
    project
        The open project (edits are committed there immediately).
    slide_id
        The slide's id in the project.
    on_changed
        Called as ``on_changed(id, annotation_or_None)`` after each committed change, so the
        layer can update its index (None = deleted).
    """

    def __init__(
        self,
        project: Project,
        slide_id: int,
        on_changed: Callable[[int, Annotation | None], None],
    ) -> None:
        self.project = project
        self.slide_id = slide_id
        self._on_changed = on_changed
        self._store_of: dict[int, int] = {}  # handle -> current store id
        self._handle_of: dict[int, int] = {}  # live store id -> handle
        self._next = 1

    def handle(self, store_id: int) -> int:
        """The stable handle of a live annotation (created on first use)."""
        handle = self._handle_of.get(store_id)
        if handle is None:
            handle = self._next
            self._next += 1
            self._handle_of[store_id] = handle
            self._store_of[handle] = store_id
        return handle

    def store_id(self, handle: int) -> int:
        """The current store id of a handle."""
        return self._store_of[handle]

    def add(self, annotations: Sequence[Annotation]) -> list[int]:
        """Insert annotations in one transaction; returns their handles."""
        ids = self.project.add_annotations(self.slide_id, annotations)
        for annotation_id, annotation in zip(ids, annotations, strict=True):
            self._on_changed(annotation_id, annotation)
        return [self.handle(i) for i in ids]

    def readd(self, handles: Sequence[int], annotations: Sequence[Annotation]) -> None:
        """Insert deleted annotations again under their old handles and, where free, old ids.

        Keeping the store id keeps the annotation's number in the list (the number a user may
        have written down or said aloud); the id is free unless another writer took it.
        """
        wanted = [self._store_of[h] for h in handles]
        ids = self.project.add_annotations(self.slide_id, annotations, wanted_ids=wanted)
        for handle, annotation_id, annotation in zip(handles, ids, annotations, strict=True):
            self._store_of[handle] = annotation_id
            self._handle_of[annotation_id] = handle
            self._on_changed(annotation_id, annotation)

    def remove(self, handles: Sequence[int]) -> None:
        """Delete annotations in one transaction."""
        ids = [self._store_of[h] for h in handles]
        with self.project.transaction():
            for annotation_id in ids:
                self.project.delete_annotation(annotation_id)
        for annotation_id in ids:
            # A freed id may be reused by SQLite for another annotation: forget it.
            self._handle_of.pop(annotation_id, None)
            self._on_changed(annotation_id, None)

    def update(self, handle: int, annotation: Annotation) -> None:
        """Replace one annotation's geometry and class."""
        annotation_id = self._store_of[handle]
        self.project.update_annotation(annotation_id, annotation)
        self._on_changed(annotation_id, annotation)

    def get(self, handle: int) -> Annotation:
        """The stored annotation of a handle."""
        return self.project.annotation(self._store_of[handle]).annotation


class AddAnnotationsCommand(QUndoCommand):
    """Create annotations (drawing, brush on empty space, import)."""

    def __init__(
        self, session: AnnotationSession, annotations: Sequence[Annotation], text: str
    ) -> None:
        super().__init__(text)
        self.session = session
        self.annotations = list(annotations)
        self.ids: list[int] = []

    def redo(self) -> None:
        if not self.ids:
            self.ids = self.session.add(self.annotations)
        else:
            self.session.readd(self.ids, self.annotations)

    def undo(self) -> None:
        self.session.remove(self.ids)

    def store_ids(self) -> list[int]:
        """The current store ids of the created annotations."""
        return [self.session.store_id(h) for h in self.ids]


class DeleteAnnotationsCommand(QUndoCommand):
    """Delete annotations; undo inserts them again (with new store ids, remapped)."""

    def __init__(self, session: AnnotationSession, store_ids: Sequence[int], text: str) -> None:
        super().__init__(text)
        self.session = session
        self.ids = [session.handle(i) for i in store_ids]
        self.annotations = [session.get(i) for i in self.ids]

    def redo(self) -> None:
        self.session.remove(self.ids)

    def undo(self) -> None:
        self.session.readd(self.ids, self.annotations)


class ModifyAnnotationCommand(QUndoCommand):
    """Replace one annotation (move, vertex edit, brush, class change) by a new version."""

    def __init__(
        self,
        session: AnnotationSession,
        store_id: int,
        before: Annotation,
        after: Annotation,
        text: str,
    ) -> None:
        super().__init__(text)
        self.session = session
        self.annotation_id = session.handle(store_id)
        self.before = before
        self.after = after

    def redo(self) -> None:
        self.session.update(self.annotation_id, self.after)

    def undo(self) -> None:
        self.session.update(self.annotation_id, self.before)


def with_class(annotation: Annotation, class_name: str, color: tuple[int, int, int]) -> Annotation:
    """A copy of ``annotation`` in another class."""
    return replace(annotation, class_name=class_name, color=color)
