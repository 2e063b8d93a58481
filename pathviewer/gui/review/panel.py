"""The review queue: a keyboard-driven gallery of the patches a label-refinement run finds suspect.

The queue lives in the project store (:meth:`~pathviewer.core.store.Project.review_queue`); a
run's ``flags.csv`` is imported into it (**Import flags.csv…**).  Each patch shows its thumbnail,
the given label, the suggested label and the confidence of the suggestion, most suspect first.

Keys (handled by the gallery itself, so the slide view's tool shortcuts never see them)
    ``1``..``9``  assign the n-th class of the project's palette
    ``A``         accept the suggestion
    ``K``         keep the given label
    ``U``         unsure (stays untrusted, leaves the pending queue)
    arrows        move; ``Space``/``Enter`` show the patch in the viewer
    ``Ctrl+Z``    undo the last decision (``Ctrl+Shift+Z`` / ``Ctrl+Y`` redo); in the app this
                  is Edit > Undo, which acts on the review while the focus is in the dock

With **Follow in viewer** (on unless turned off; remembered) the slide view shows the current
patch as the queue moves: its slide opens, the view centres on it, keeping the zoom unless the
patch would not be visible.  The tiles widen so that the gallery's columns fill the dock.

Every decision goes through :meth:`~pathviewer.core.store.Project.record_review`, which makes the
patch label trusted (``accept``/``keep``/``assign``) and keeps who decided what and when; the
next label-refinement run reads trusted labels and never refines them.  Decided items stay in
the gallery greyed with their decision until **Refresh**, which shows only what is still pending.
An undo retracts the decision in the store (it stays in the audit trail, marked retracted) and
the patch is pending again; the undo history lasts the session.

Thumbnails are read on a :class:`~PySide6.QtCore.QThreadPool` (never on the UI thread) through
:func:`pathviewer.core.slide.open_slide`, with opened slides cached.
"""

from __future__ import annotations

import getpass
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import (
    QAbstractListModel,
    QEvent,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QRectF,
    QRunnable,
    QSettings,
    QSize,
    Qt,
    QThreadPool,
    Signal,
)
from PySide6.QtGui import (
    QAction,
    QBrush,
    QColor,
    QFont,
    QImage,
    QKeyEvent,
    QKeySequence,
    QPainter,
    QPainterPath,
    QPen,
    QResizeEvent,
    QUndoCommand,
    QUndoGroup,
    QUndoStack,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QGraphicsPathItem,
    QGraphicsRectItem,
    QHBoxLayout,
    QLabel,
    QListView,
    QMessageBox,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)
from shapely.geometry.base import BaseGeometry

from pathviewer.core.errors import PathViewerError, SlideError
from pathviewer.core.identity import same_slide
from pathviewer.core.ranking import RANKING_DETAILS, RANKINGS, run_ranking
from pathviewer.core.slide import read_box
from pathviewer.core.slide_pool import SlidePool
from pathviewer.core.store import FlagRecord, Project
from pathviewer.gui import file_dialogs
from pathviewer.gui.viewer.tiles import rgb_to_qimage
from pathviewer.jobs import import_run_flags
from pathviewer.session.review_region import flags_inside

if TYPE_CHECKING:
    from pathviewer.core.slide import SlideSource
    from pathviewer.gui.main_window import MainWindow
    from pathviewer.gui.project import ProjectController

log = logging.getLogger(__name__)

#: QSettings key of the reviewer's name (default: the login name).
AUTHOR_SETTING = "review/author"

#: Edge of a gallery thumbnail (screen px).
THUMB_SIZE = 112

#: Magnification at which a patch is shown in the viewer when the zoom has to change.
CONTEXT_MAGNIFICATION = 10.0

#: A patch smaller than this on screen (px) is not really visible: the viewer zooms in.
MIN_PATCH_ON_SCREEN = 24

#: Without an objective power, a patch the zoom has to change for spans this share of the view.
PATCH_SHARE_OF_VIEW = 0.25

#: QSettings key of "Follow in viewer" (on: the slide view shows the current patch).
FOLLOW_SETTING = "review/follow"

#: z-value of the highlight box in the slide scene (above slide, heatmap and annotations).
HIGHLIGHT_Z = 50.0

#: Opened slides kept by the thumbnail loader.
SLIDE_CACHE_SIZE = 8

FlagRole = Qt.ItemDataRole.UserRole + 1
DecisionRole = Qt.ItemDataRole.UserRole + 2
#: Whether the item's suggestion is hidden (blind review, undecided).
HiddenRole = Qt.ItemDataRole.UserRole + 3

#: QSettings key of blind review (on: suggestions hidden until decided).
BLIND_SETTING = "review/blind"

#: Text shown for each decision on a decided item.
DECISION_TEXT = {"accept": "accepted", "keep": "kept", "assign": "assigned", "unsure": "unsure"}


def reviewer_name(settings: QSettings | None = None) -> str:
    """Who is reviewing: the ``review/author`` setting, else the login name."""
    value = (settings or QSettings()).value(AUTHOR_SETTING, "")
    if value:
        return str(value)
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in containers without a passwd entry
        return "unknown"


def resolve_slide_path(path: str, roots: list[Path]) -> str:
    """The file a stored slide path refers to: as is when absolute or present, else under a root.

    Flags written by a refinement run hold the slide paths of its labels CSV, which may be
    relative to where that CSV was; the dock tries the flags' folder and the project folder.
    """
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return str(candidate)
    for root in roots:
        if (root / candidate).exists():
            return str(root / candidate)
    return str(candidate)


# --------------------------------------------------------------------------- thumbnails


def read_patch(slide: SlideSource, box: tuple[int, int, int, int], size: int) -> QImage:
    """The patch ``box`` (level-0 ``x, y, width, height``) fitted into ``size`` px square.

    The pixels are :func:`~pathviewer.core.slide.read_box`'s, the ones label refinement trains
    on for the same box, so the annotator judges what the model saw.
    """
    _x, _y, width, height = box
    scale = size / max(width, height, 1)
    out = (max(1, round(width * scale)), max(1, round(height * scale)))
    return rgb_to_qimage(read_box(slide, box, out))


class _LoaderSignals(QObject):
    loaded = Signal(int, object, str)  # flag id, QImage or None, error message


class _PatchTask(QRunnable):
    def __init__(self, loader: ThumbnailLoader, flag_id: int, path: str, box: tuple) -> None:
        super().__init__()
        self.loader, self.flag_id, self.path, self.box = loader, flag_id, path, box

    def run(self) -> None:
        loader = self.loader
        if loader.generation_of(self.flag_id) is None:
            return  # the model was reset since this was queued
        loader.thread_ids.add(threading.get_ident())
        try:
            image: QImage | None = read_patch(loader.slides.get(self.path), self.box, loader.size)
            error = ""
        except Exception as exc:  # any reader failure becomes a marked thumbnail, never a crash
            image, error = None, str(exc)
        loader.signals.loaded.emit(self.flag_id, image, error)


class ThumbnailLoader(QObject):
    """Reads patch thumbnails on a thread pool and announces them with ``loaded``.

    Signals
    -------
    loaded(int, object, str)
        Flag id, the ``QImage`` (None on failure) and the error message (empty on success);
        delivered in the GUI thread.
    """

    loaded = Signal(int, object, str)

    def __init__(self, size: int = THUMB_SIZE, threads: int = 2, parent: QObject | None = None):
        super().__init__(parent)
        self.size = size
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max(1, threads))
        #: Slides opened once and shared by the loader threads (the least recently used go).
        self.slides = SlidePool(SLIDE_CACHE_SIZE)
        self.signals = _LoaderSignals()
        self.signals.loaded.connect(self._deliver, Qt.ConnectionType.QueuedConnection)
        #: Ids of the threads that read thumbnails (tests check the UI thread is not one).
        self.thread_ids: set[int] = set()
        self._pending: dict[int, int] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def generation_of(self, flag_id: int) -> int | None:
        with self._lock:
            return self._pending.get(flag_id)

    def request(self, flag_id: int, path: str, box: tuple[int, int, int, int]) -> None:
        """Queue a read (ignored while one for ``flag_id`` is pending)."""
        with self._lock:
            if flag_id in self._pending:
                return
            self._pending[flag_id] = self._generation
        self.pool.start(_PatchTask(self, flag_id, path, box))

    def reset(self) -> None:
        """Forget queued reads (their results are dropped) and the cached slides."""
        with self._lock:
            self._generation += 1
            self._pending.clear()
        self.pool.clear()
        self.slides.clear()

    def wait(self, msecs: int = 10_000) -> bool:
        """Wait for the running reads (tests, shutdown)."""
        return bool(self.pool.waitForDone(msecs))

    def _deliver(self, flag_id: int, image: object, error: str) -> None:
        with self._lock:
            if self._pending.pop(flag_id, None) is None:
                return
        self.loaded.emit(flag_id, image, error)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class StoredDecision:
    """What :meth:`ReviewQueueModel.decide` stored, enough to take it back and to redo it."""

    flag_id: int
    #: The review id, or the adjudication id when ``adjudication``.
    record_id: int
    adjudication: bool
    decision: str
    label: str | None
    suggestion_shown: bool
    seconds: float | None


@dataclass
class QueueItem:
    """A gallery entry: the flag and what was decided on it in this session."""

    flag: FlagRecord
    decision: str | None = None
    label: str | None = None


class ReviewQueueModel(QAbstractListModel):
    """The review queue of a project, most suspect first (a list model for the gallery).

    Items decided in this session stay (greyed, with the decision) until :meth:`refresh`.
    The decoration is the patch thumbnail, read by :class:`ThumbnailLoader` when first asked.

    Signals
    -------
    countsChanged(int, int)
        ``(reviewed, left)`` after a load or a decision.
    """

    countsChanged = Signal(int, int)

    def __init__(self, parent: QObject | None = None, loader: ThumbnailLoader | None = None):
        super().__init__(parent)
        self.project: Project | None = None
        self.items: list[QueueItem] = []
        self.show_reviewed = False
        self.slide_roots: list[Path] = []
        self.loader = loader or ThumbnailLoader(parent=self)
        self.loader.loaded.connect(self._on_loaded)
        self._thumbs: dict[int, QImage | None] = {}
        self._errors: dict[int, str] = {}
        self._rows: dict[int, int] = {}
        #: Blind review: the suggestion stays hidden until the item is decided.
        self.blind = False
        #: Adjudication: the queue holds the patches reviewers disagree on, and a decision
        #: settles the patch (:meth:`~pathviewer.core.store.Project.adjudicate`).
        self.adjudicating = False
        #: ``{patch label id: {reviewer: label}}`` of the disputed patches (adjudication).
        self.disputes: dict[int, dict[str, str]] = {}
        # When each flag was last brought on screen (monotonic s), for the time per decision.
        self._shown_at: dict[int, float] = {}
        # Flags whose suggestion the annotator has seen (a decision shown, then undone): in
        # blind review they are not hidden again, and a new decision records it as seen.
        self._revealed: set[int] = set()
        #: Only the flags whose given label is this class (None: all), in the same order.
        self.given_filter: str | None = None
        #: The given labels of the flags loaded before filtering (for the filter's choices).
        self.given_classes: list[str] = []

    # ---- loading

    def set_project(self, project: Project | None) -> None:
        """Show the queue of ``project`` (None to empty)."""
        self.project = project
        self._revealed.clear()
        if project is not None and project.folder not in self.slide_roots:
            self.slide_roots.append(project.folder)
        self.refresh()

    def refresh(self) -> None:
        """Reload from the store: pending flags only (or all with ``show_reviewed``)."""
        self.beginResetModel()
        self.loader.reset()
        self._thumbs.clear()
        self._errors.clear()
        self.items = [QueueItem(flag) for flag in self._load()]
        self._rows = {item.flag.id: row for row, item in enumerate(self.items)}
        self.endResetModel()
        self._emit_counts()

    def _load(self) -> list[FlagRecord]:
        if self.project is None:
            return []
        if self.adjudicating:
            self.disputes = self.project.disputed()
            flags = [
                f
                for f in self.project.review_queue(only_pending=False)
                if f.patch_label_id in self.disputes
            ]
        else:
            flags = self.project.review_queue(only_pending=not self.show_reviewed)
        # A patch flagged by several imported runs appears once, with its latest flag.
        latest: dict[int, FlagRecord] = {}
        for flag in flags:
            if flag.patch_label_id not in latest or flag.id > latest[flag.patch_label_id].id:
                latest[flag.patch_label_id] = flag
        self.given_classes = sorted({f.given for f in latest.values()})
        kept = [
            f for f in latest.values() if self.given_filter is None or f.given == self.given_filter
        ]
        return sorted(kept, key=lambda f: (f.rank, f.id))

    def set_given_filter(self, given: str | None) -> None:
        """Show only the flags of labels given as ``given`` (None: all), in queue order."""
        if given != self.given_filter:
            self.given_filter = given
            self.refresh()

    def counts(self) -> tuple[int, int]:
        """``(reviewed, left)`` from the store."""
        return self.project.review_counts() if self.project is not None else (0, 0)

    def _emit_counts(self) -> None:
        self.countsChanged.emit(*self.counts())

    # ---- Qt model API

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex | None = None) -> int:  # noqa: N802
        if parent is not None and parent.isValid():
            return 0
        return len(self.items)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = 0) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.items):
            return None
        item = self.items[index.row()]
        flag = item.flag
        hidden = self.hides_suggestion(index.row())
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{flag.given} → ?" if hidden else f"{flag.given} → {flag.suggested}"
        if role == Qt.ItemDataRole.DecorationRole:
            return self.thumbnail(flag)
        if role == Qt.ItemDataRole.ToolTipRole:
            confidence = "" if flag.confidence is None else f" (confidence {flag.confidence:.2f})"
            suggestion = "hidden (blind review)" if hidden else f"{flag.suggested}{confidence}"
            text = (
                f"{Path(flag.slide_path).name}  x {flag.x} y {flag.y}  "
                f"{flag.width}×{flag.height} px\ngiven {flag.given}, suggested {suggestion}"
            )
            if flag.id in self._errors:
                text += f"\ncannot read: {self._errors[flag.id]}"
            dispute = self.disputes.get(flag.patch_label_id) if self.adjudicating else None
            if dispute:
                given = ", ".join(
                    f"{who or 'anonymous'}: {label}" for who, label in dispute.items()
                )
                text += f"\nreviewers disagree — {given}"
            return text
        if role == FlagRole:
            return flag
        if role == HiddenRole:
            return hidden
        if role == DecisionRole:
            return self._decision(item)
        return None

    def _decision(self, item: QueueItem) -> tuple[str, str | None] | None:
        """``(decision, label)`` of an item decided now or before, else None.

        A disputed patch has reviews, but it is undecided until adjudicated.
        """
        if item.decision is not None:
            return item.decision, item.label
        if self.adjudicating:
            return None
        if item.flag.reviewed or item.flag.trusted:
            return "reviewed", item.flag.current_label
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    # ---- thumbnails

    def thumbnail(self, flag: FlagRecord) -> QImage | None:
        """The thumbnail when read (None while loading or unreadable; a read is queued)."""
        if flag.id in self._thumbs:
            return self._thumbs[flag.id]
        path = resolve_slide_path(flag.slide_path, self.slide_roots)
        self.loader.request(flag.id, path, (flag.x, flag.y, flag.width, flag.height))
        return None

    def thumbnail_error(self, flag_id: int) -> str | None:
        return self._errors.get(flag_id)

    def _on_loaded(self, flag_id: int, image: object, error: str) -> None:
        row = self._rows.get(flag_id)
        if row is None:
            return
        self._thumbs[flag_id] = image if isinstance(image, QImage) else None
        if error:
            self._errors[flag_id] = error
        index = self.index(row)
        self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])

    # ---- decisions

    def hides_suggestion(self, row: int) -> bool:
        """Whether row ``row``'s suggestion is hidden (blind review, not decided yet)."""
        if not self.blind or not 0 <= row < len(self.items):
            return False
        item = self.items[row]
        return item.flag.id not in self._revealed and self._decision(item) is None

    def mark_shown(self, row: int) -> None:
        """The item of ``row`` is now the one the annotator looks at (starts its clock)."""
        if 0 <= row < len(self.items):
            self._shown_at[self.items[row].flag.id] = time.monotonic()

    def set_blind(self, blind: bool) -> None:
        """Hide (or show) the suggestions of undecided items."""
        self.blind = bool(blind)
        if self.items:
            self.dataChanged.emit(self.index(0), self.index(len(self.items) - 1))

    def decide(
        self,
        row: int,
        decision: str,
        label: str | None = None,
        author: str | None = None,
        replay: StoredDecision | None = None,
    ) -> StoredDecision:
        """Store a decision on the item of ``row`` and mark it done; returns what was stored.

        ``replay`` records an undone decision again (redo) as it was first taken: the same
        label, whether the suggestion was shown and the seconds it took.

        Raises
        ------
        PathViewerError
            The store refused it (no project, unknown patch label, ``assign`` without label).
        """
        if self.project is None:
            raise PathViewerError("no project is open")
        item = self.items[row]
        hidden = self.hides_suggestion(row) if replay is None else not replay.suggestion_shown
        if decision == "accept" and hidden:
            raise PathViewerError(
                "blind review: the suggestion is hidden, so it cannot be accepted; choose a"
                " class (1-9), keep the given label (K) or mark it unsure (U)"
            )
        if decision == "accept" and label is None:
            # The suggestion of *this* flag, not of whichever run was imported last.
            label = item.flag.suggested
        if self.adjudicating:
            if decision == "unsure":
                raise PathViewerError(
                    "adjudication settles a patch: choose its class (1-9), accept (A) or keep (K)"
                )
            label = item.flag.given if decision == "keep" else label
            assert label is not None
            record_id = self.project.adjudicate(item.flag.patch_label_id, label, author)
            item.decision, item.label = decision, label
            seconds = None
        else:
            started = self._shown_at.get(item.flag.id)
            if replay is not None:
                seconds = replay.seconds
            else:
                seconds = None if started is None else round(time.monotonic() - started, 3)
            record_id = self.project.record_review(
                item.flag.patch_label_id,
                decision,
                label=label,
                author=author,
                suggestion_shown=not hidden,
                seconds=seconds,
            )
            item.decision = decision
            item.label = label if decision != "keep" else item.flag.current_label
        # A decided tile shows the suggestion: from now on the annotator has seen it.
        self._revealed.add(item.flag.id)
        self._item_changed(row)
        return StoredDecision(
            item.flag.id,
            record_id,
            self.adjudicating,
            decision,
            label,
            not hidden,
            seconds,
        )

    def undecide(self, stored: StoredDecision, author: str | None = None) -> int | None:
        """Take back a decision :meth:`decide` stored: the store marks it retracted and the
        patch is undecided again; returns its row (None when the queue no longer shows it).

        Raises
        ------
        PathViewerError
            No project is open, or the store refused it (already retracted).
        """
        if self.project is None:
            raise PathViewerError("no project is open")
        if stored.adjudication:
            self.project.retract_adjudication(stored.record_id, author)
        else:
            self.project.retract_review(stored.record_id, author)
        row = self._rows.get(stored.flag_id)
        if row is None:  # refreshed away since: it is pending again, so a reload shows it
            self.refresh()
            row = self._rows.get(stored.flag_id)
            return row
        item = self.items[row]
        current = {f.id: f for f in self.project.review_queue(only_pending=False)}
        item.flag = current.get(item.flag.id, item.flag)
        item.decision = item.label = None
        if self.adjudicating:
            self.disputes = self.project.disputed()
        self._item_changed(row)
        return row

    def _item_changed(self, row: int) -> None:
        index = self.index(row)
        self.dataChanged.emit(index, index, [DecisionRole, Qt.ItemDataRole.DisplayRole])
        self._emit_counts()

    def row_of(self, flag_id: int) -> int | None:
        """The row showing flag ``flag_id`` (None when the queue does not show it)."""
        return self._rows.get(flag_id)

    def next_pending_row(self, after: int) -> int | None:
        """The first undecided row after ``after`` (wrapping round), or None."""
        n = len(self.items)
        for step in range(1, n + 1):
            row = (after + step) % n
            if self.data(self.index(row), DecisionRole) is None:
                return row
        return None


# --------------------------------------------------------------------------- view


class ReviewDelegate(QStyledItemDelegate):
    """Draws a gallery tile: thumbnail, given → suggested, confidence; decided items greyed."""

    #: The narrowest tile: a thumbnail with room for its two lines of labels.
    MIN_WIDTH = THUMB_SIZE + 36

    def __init__(self, parent: QObject | None = None, classes: dict | None = None) -> None:
        super().__init__(parent)
        self.classes: dict[str, tuple[int, int, int]] = classes or {}
        #: Tile width, set by the gallery so that its columns share the dock's width.
        self.tile_width = self.MIN_WIDTH

    def sizeHint(  # noqa: N802 - Qt override
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        line = option.fontMetrics.height()
        return QSize(self.tile_width, THUMB_SIZE + 2 * line + 14)

    def _color(self, name: str) -> QColor:
        rgb = self.classes.get(name)
        return QColor(*rgb) if rgb else QColor(150, 150, 150)

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        flag: FlagRecord = index.data(FlagRole)
        decision = index.data(DecisionRole)
        rect: QRect = option.rect.adjusted(3, 3, -3, -3)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = option.palette
        background = palette.highlight().color() if selected else palette.base().color()
        painter.fillRect(rect, background)
        thumb_rect = QRect(
            rect.x() + (rect.width() - THUMB_SIZE) // 2, rect.y() + 4, THUMB_SIZE, THUMB_SIZE
        )
        image = index.data(Qt.ItemDataRole.DecorationRole)
        if isinstance(image, QImage) and not image.isNull():
            target = QRect(0, 0, image.width(), image.height())
            target.moveCenter(thumb_rect.center())
            painter.drawImage(target, image)
        else:
            painter.fillRect(thumb_rect, QColor(225, 225, 225))
            painter.setPen(QColor(120, 120, 120))
            model = index.model()
            error = getattr(model, "thumbnail_error", lambda _id: None)(flag.id)
            painter.drawText(
                thumb_rect, Qt.AlignmentFlag.AlignCenter, "unreadable" if error else "loading…"
            )
        if decision is not None:
            # Done: wash the thumbnail out and stamp the decision, so what is left stands out.
            painter.fillRect(thumb_rect, QColor(255, 255, 255, 150))
            what, label = decision
            stamp = DECISION_TEXT.get(what, what) + (
                f": {label}" if label and what != "unsure" else ""
            )
            band = QRect(thumb_rect.x(), thumb_rect.bottom() - 20, thumb_rect.width(), 20)
            painter.fillRect(band, QColor(40, 40, 40, 200))
            painter.setPen(QColor(255, 255, 255))
            painter.drawText(band, Qt.AlignmentFlag.AlignCenter, stamp)
        text_color = palette.highlightedText().color() if selected else palette.text().color()
        if decision is not None:
            text_color = QColor(150, 150, 150)
        font = QFont(option.font)
        if font.pointSizeF() > 8:
            font.setPointSizeF(font.pointSizeF() - 1)  # two labels must fit under a thumbnail
        painter.setFont(font)
        metrics = painter.fontMetrics()
        line = metrics.height()
        y = thumb_rect.bottom() + 4
        chip = 9
        x = rect.x() + 5
        hidden = bool(index.data(HiddenRole))
        # Line 1: given → suggested, each with its class colour ("?" in blind review).
        for name, suffix in ((flag.given, " → "), ("?" if hidden else flag.suggested, "")):
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(self._color(name))
            painter.drawRect(QRectF(x, y + (line - chip) / 2, chip, chip))
            x += chip + 3
            painter.setPen(text_color)
            text = name + suffix
            painter.drawText(
                QRect(x, y, rect.right() - x, line),
                Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                metrics.elidedText(text, Qt.TextElideMode.ElideRight, max(0, rect.right() - x)),
            )
            x += metrics.horizontalAdvance(text)
        # Line 2: confidence of the suggestion.
        y += line
        bold = QFont(font)
        bold.setBold(True)
        painter.setFont(bold)
        confidence = "—" if flag.confidence is None else f"{flag.confidence:.2f}"
        painter.drawText(
            QRect(rect.x() + 5, y, rect.width() - 10, line),
            Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
            "blind review" if hidden else f"confidence {confidence}",
        )
        if option.state & QStyle.StateFlag.State_HasFocus or selected:
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(palette.highlight().color(), 2))
            painter.drawRect(rect)
        painter.restore()


class ReviewGallery(QListView):
    """The gallery: an icon-mode list that handles the review keys itself.

    The keys are claimed in ``ShortcutOverride`` so window-wide shortcuts (annotation tools,
    classes, ``F`` to fit) do not fire while the gallery has focus.

    Signals
    -------
    decisionRequested(int, str, object)
        Row, decision and the class name for ``assign`` (else None).
    showRequested(int)
        Show the item of this row in the viewer (``Space``/``Enter``).
    """

    decisionRequested = Signal(int, str, object)
    showRequested = Signal(int)

    LETTERS: dict[int, str] = {Qt.Key.Key_A: "accept", Qt.Key.Key_K: "keep", Qt.Key.Key_U: "unsure"}
    DIGITS = {getattr(Qt.Key, f"Key_{n}"): n for n in range(1, 10)}

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setWrapping(True)
        self.setUniformItemSizes(True)
        self.setSpacing(2)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.class_names: list[str] = []

    def _layout_width(self) -> int:
        """The width QListView lays tiles out in: it always keeps room for the vertical
        scroll bar, so that its appearing never reflows the gallery."""
        width = self.maximumViewportSize().width()
        if self.verticalScrollBarPolicy() != Qt.ScrollBarPolicy.ScrollBarAlwaysOff:
            bar = self.style().pixelMetric(
                QStyle.PixelMetric.PM_ScrollBarExtent, None, self.verticalScrollBar()
            )
            width -= bar
        return width - self.spacing()

    def columns(self) -> int:
        """How many tiles fit side by side in the gallery's width (at least one)."""
        step = ReviewDelegate.MIN_WIDTH + self.spacing()
        return max(1, self._layout_width() // step)

    def fit_columns(self) -> None:
        """Widen the tiles so that :meth:`columns` of them fill the width, no strip left over."""
        delegate = self.itemDelegate()
        if not isinstance(delegate, ReviewDelegate):
            return
        step = self._layout_width() // self.columns()
        width = max(ReviewDelegate.MIN_WIDTH, step - self.spacing())
        if width != delegate.tile_width:
            delegate.tile_width = width
            self.scheduleDelayedItemsLayout()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        self.fit_columns()
        super().resizeEvent(event)

    def _claims(self, event: QKeyEvent) -> bool:
        if event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
            return False  # Ctrl+1 and the like stay with the window
        key = event.key()
        return key in self.LETTERS or key in self.DIGITS or key in (Qt.Key.Key_Space,)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ShortcutOverride and isinstance(event, QKeyEvent):
            if self._claims(event):
                event.accept()
                return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        row = self.currentIndex().row()
        key = event.key()
        if self._claims(event) or key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if row < 0:
                event.accept()
                return
            if key in self.LETTERS:
                self.decisionRequested.emit(row, self.LETTERS[key], None)
            elif key in self.DIGITS:
                n = self.DIGITS[key]
                if n <= len(self.class_names):
                    self.decisionRequested.emit(row, "assign", self.class_names[n - 1])
            else:
                self.showRequested.emit(row)
            event.accept()
            return
        super().keyPressEvent(event)


class ReviewDecisionCommand(QUndoCommand):
    """A review decision on the undo stack: undo retracts it in the store, redo records it anew.

    The decision is stored before the command is pushed (a refusal then never reaches the
    stack), so the first :meth:`redo`, which ``QUndoStack.push`` calls, does nothing.
    """

    def __init__(self, panel: ReviewPanel, stored: StoredDecision) -> None:
        label = f" {stored.label}" if stored.label and stored.decision != "unsure" else ""
        super().__init__(f"review: {DECISION_TEXT.get(stored.decision, stored.decision)}{label}")
        self.panel = panel
        self.stored = stored
        self._first = True
        # QUndoStack counts an undo as done whatever happened; when the store refused the
        # retraction the decision still stands, and recording it again would make it twice.
        self._standing = False

    def undo(self) -> None:
        self._standing = not self.panel.retract(self.stored)

    def redo(self) -> None:
        if self._first or self._standing:
            self._first = self._standing = False
            return
        stored = self.panel.record_again(self.stored)
        if stored is not None:
            self.stored = stored


class ReviewPanel(QWidget):
    """The Review queue dock's contents: counters, key map, import, gallery.

    Parameters
    ----------
    window
        The main window (None for a stand-alone panel; clicking then shows nothing).
    settings
        Where the reviewer's name is read (default ``QSettings()``).
    """

    def __init__(
        self,
        window: MainWindow | None = None,
        settings: QSettings | None = None,
        project: ProjectController | None = None,
    ) -> None:
        super().__init__(window)
        self.window_ = window
        self.project_controller = project
        self.settings = settings or QSettings()
        self.model = ReviewQueueModel(self)
        self.delegate = ReviewDelegate(self)
        self.highlight: QGraphicsRectItem | None = None
        # Set by install(): Tools > Review queue and Tools > Import review flags.
        self.menu_actions: tuple[QAction, ...] = ()
        #: Set by install(): shows the dock with room for the gallery.
        self.show_dock: Callable[[], None] = lambda: None

        self.counts_label = QLabel("no project")
        self.counts_label.setObjectName("review-counts")
        font = self.counts_label.font()
        font.setBold(True)
        self.counts_label.setFont(font)
        self.counts_label.setWordWrap(True)
        self.import_button = QPushButton("Import flags.csv…")
        self.import_button.clicked.connect(self.choose_flags)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Reload: show only what is still pending")
        self.refresh_button.clicked.connect(self.refresh)
        self.show_reviewed = QCheckBox("Show reviewed")
        self.show_reviewed.toggled.connect(self._toggle_reviewed)
        self.mode_combo = QComboBox()
        self.mode_combo.addItem("To review", "review")
        self.mode_combo.addItem("Disputed: adjudicate", "adjudicate")
        self.mode_combo.setToolTip(
            "Disputed: the patches reviewers labelled differently; your decision settles each"
            " one (it becomes the trusted label)"
        )
        self.mode_combo.currentIndexChanged.connect(
            lambda _i: self.set_adjudicating(self.mode_combo.currentData() == "adjudicate")
        )
        self.blind_check = QCheckBox("Blind review")
        self.blind_check.setToolTip(
            "Hide the model's suggestion until you decide, to measure how often you agree with"
            " it unprompted (automation bias); the time per decision is stored either way"
        )
        self.blind_check.toggled.connect(self.set_blind)
        self.agreement_label = QLabel()
        self.agreement_label.setObjectName("review-agreement")
        self.agreement_label.setWordWrap(True)
        #: Set by install(): the slide and area of the region selected in the viewer.
        self.selected_region: Callable[[], tuple[str, BaseGeometry] | None] | None = None
        self.region_buttons: dict[str, QPushButton] = {}
        for decision, text in (("accept", "Accept"), ("keep", "Keep"), ("unsure", "Unsure")):
            button = QPushButton(text)
            button.setToolTip(
                f"{text} every undecided flag whose patch centre lies in the region (a polygon"
                " or rectangle annotation) selected on the slide"
            )
            button.clicked.connect(lambda _checked=False, d=decision: self.decide_region(d))
            self.region_buttons[decision] = button
        self.flags_check = QCheckBox("Flags on the slide")
        self.flags_check.setToolTip(
            "Outline the flagged patches of the slide shown: yellow to review, grey decided"
        )
        self.flags_check.toggled.connect(lambda _on: self.draw_flags())
        self.flags_item: QGraphicsPathItem | None = None
        self.given_combo = QComboBox()
        self.given_combo.setToolTip(
            "Show only the patches given this label, in the same order. 'Labelled Normal' "
            "lists the Normal labels the model takes for another class: tumour an annotator "
            "missed. On the realistic benchmark its first 50 are 3-4 times as often real "
            "mistakes as the first 50 of the whole queue under missed foci "
            "(docs/label-refinement.md)."
        )
        self.given_combo.currentIndexChanged.connect(
            lambda _i: self.model.set_given_filter(self.given_combo.currentData())
        )
        self.follow_check = QCheckBox("Follow in viewer")
        self.follow_check.setToolTip(
            "Show the current patch on the slide as you move through the queue (keys or click):"
            " its slide opens and the view centres on it"
        )
        self.follow_check.setChecked(
            str(self.settings.value(FOLLOW_SETTING, "true")).lower() in ("true", "1")
        )
        self.follow_check.toggled.connect(self._set_follow)
        #: This session's decisions, newest on top: undo retracts them in the store.
        self.undo_stack = QUndoStack(self)
        # Set by use_undo_group(): the window's Edit > Undo group this stack joins.
        self._undo_group: QUndoGroup | None = None
        self._undo_fallback: Callable[[], QUndoStack | None] = lambda: None
        self._undo_dock: QWidget | None = None
        # Ctrl+Z inside the dock; in the app the window's Edit > Undo takes over
        # (use_undo_group), and these lose their keys so that the two never clash.
        self.undo_action = self.undo_stack.createUndoAction(self, "Undo decision")
        self.undo_action.setShortcuts([QKeySequence("Ctrl+Z")])
        self.redo_action = self.undo_stack.createRedoAction(self, "Redo decision")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        for action in (self.undo_action, self.redo_action):
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.addAction(action)
        self.order_label = QLabel()
        self.order_label.setObjectName("review-order")
        self.order_label.setWordWrap(True)
        self.keys_label = QLabel()
        self.keys_label.setWordWrap(True)
        self.keys_label.setTextFormat(Qt.TextFormat.RichText)

        self.gallery = ReviewGallery(self)
        self.gallery.setModel(self.model)
        self.gallery.setItemDelegate(self.delegate)
        self.gallery.decisionRequested.connect(self.decide)
        self.gallery.showRequested.connect(self.show_row)
        self.gallery.clicked.connect(lambda index: self.show_row(index.row()))

        # Short rows: the dock must fit a third of a 1024 px screen without scrolling sideways.
        top = QHBoxLayout()
        top.addWidget(self.counts_label, 1)
        top.addWidget(self.given_combo)
        mode_row = QHBoxLayout()
        mode_row.addWidget(self.mode_combo)
        mode_row.addStretch(1)
        mode_row.addWidget(self.follow_check)
        switches = QHBoxLayout()
        switches.addWidget(self.blind_check)
        switches.addWidget(self.show_reviewed)
        switches.addStretch(1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.import_button)
        buttons.addWidget(self.refresh_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(buttons)
        layout.addLayout(top)
        layout.addLayout(mode_row)
        layout.addLayout(switches)
        layout.addWidget(self.order_label)
        layout.addWidget(self.keys_label)
        layout.addWidget(self.gallery, 1)
        # Two rows: in one, the region's buttons did not fit a dock a third of a small screen.
        region_title = QHBoxLayout()
        region_title.addWidget(QLabel("In the selected region:"))
        region_title.addStretch(1)
        region_title.addWidget(self.flags_check)
        layout.addLayout(region_title)
        region_row = QHBoxLayout()
        for button in self.region_buttons.values():
            region_row.addWidget(button)
        region_row.addStretch(1)
        layout.addLayout(region_row)
        layout.addWidget(self.agreement_label)

        self.model.countsChanged.connect(self._update_counts)
        self.model.countsChanged.connect(lambda *_counts: self._update_agreement())
        self.model.modelReset.connect(self._select_first)
        self.model.modelReset.connect(self._update_given_choices)
        self.gallery.selectionModel().currentChanged.connect(
            lambda current, _previous: self._current_changed(current.row())
        )
        blind = str(self.settings.value(BLIND_SETTING, "false")).lower() in ("true", "1")
        self.blind_check.setChecked(blind)
        if window is not None:
            window.slide_view.slideChanged.connect(self._forget_highlight)
            window.slide_view.slideChanged.connect(lambda _slide: self._slide_shown())
        self.model.countsChanged.connect(lambda *_counts: self.draw_flags())
        self._update_keys()
        self._update_order()

    # ---- project and queue

    def _update_given_choices(self) -> None:
        """The filter's choices: every given label in the queue, the chosen one kept."""
        chosen = self.model.given_filter
        names = list(self.model.given_classes)
        if chosen is not None and chosen not in names:
            names.append(chosen)
        self.given_combo.blockSignals(True)
        self.given_combo.clear()
        self.given_combo.addItem("Any label", None)
        for name in names:
            self.given_combo.addItem(f"Labelled {name}", name)
        self.given_combo.setCurrentIndex(max(0, self.given_combo.findData(chosen)))
        self.given_combo.blockSignals(False)

    def _order_key(self) -> str | None:
        project = self.project
        return None if project is None else f"review/ranking/{project.folder}"

    def _update_order(self, ranking: str | None = None) -> None:
        """Say how the queue is ordered (the ranking of the run whose flags were imported)."""
        key = self._order_key()
        if key is None:
            self.order_label.setText("")
            return
        if ranking is not None:
            self.settings.setValue(key, ranking)
        stored = str(self.settings.value(key, ""))
        if stored in RANKINGS:
            text = f"Queue order: {RANKINGS[stored]}."
            tip = RANKING_DETAILS[stored]
        elif stored:
            text, tip = "Queue order: as in the imported flags.csv.", ""
        else:
            text, tip = "", ""
        self.order_label.setText(text)
        self.order_label.setToolTip(
            (tip + "\n\n" if tip else "")
            + "Set by the label-refinement run that wrote the flags (its rank_by setting)."
        )

    @property
    def project(self) -> Project | None:
        return self.model.project

    def set_project(self, project: Project | None) -> None:
        """Show ``project``'s queue (None empties the gallery)."""
        self.undo_stack.clear()  # the decisions of another project are not ours to undo
        self.model.set_project(project)
        self._update_keys()
        self._update_order()
        self.import_button.setEnabled(True)

    def refresh(self) -> None:
        self.model.refresh()

    def _toggle_reviewed(self, on: bool) -> None:
        self.model.show_reviewed = on
        self.model.refresh()

    def offer_run_flags(self, run_dir: object) -> int:
        """Load a just-finished project refinement run's flags into the queue and show it.

        Returns the number of flags (0 when the run is not one, has none, or fails to load).
        """
        from pathviewer.runs import read_run

        flags = Path(str(run_dir)) / "flags.csv"
        if self.project is None or not flags.is_file():
            return 0
        run = read_run(Path(str(run_dir)))
        if run is None or run.method != "refine-project":
            return 0
        try:
            count = self.import_flags(flags)
        except PathViewerError as error:
            QMessageBox.warning(self, "Review", f"The run's flags were not loaded: {error}")
            return 0
        self.show_dock()
        if self.window_ is not None:
            self.window_.statusBar().showMessage(
                f"{count} flags of {Path(str(run_dir)).name} are in the review queue", 10000
            )
        return count

    def import_flags(
        self, flags_csv: str | os.PathLike[str], replace: bool = True, with_labels: bool = True
    ) -> int:
        """Import a refinement run's ``flags.csv`` into the project's queue; returns its rows.

        Slide paths, which a run writes relative to its folder, are stored as absolute paths
        (or as the path of the same file already in the project), so the flags of successive
        runs, the project's labels and ``train noisy --project`` all name a slide alike.  With
        ``replace`` the previous queue is emptied first: a new run's flags supersede the last
        run's (decisions and labels stay).  With ``with_labels`` the run's training labels
        (``labels`` of its ``config.json``) are added too, as untrusted ``imported`` labels for
        the boxes the project does not have yet, so the next ``train noisy --project`` trains
        on all of them and not only on the flagged ones.

        Raises
        ------
        PathViewerError
            No project is open, or the CSV is malformed (nothing is imported then).
        """
        project = self.project
        if project is None:
            raise PathViewerError("open or create a project before importing flags")
        path = Path(flags_csv).resolve()
        count = import_run_flags(project, path, replace=replace, with_labels=with_labels)
        for root in (path.parent, path.parent.parent):
            if root not in self.model.slide_roots:
                self.model.slide_roots.insert(0, root)
        self._update_order(run_ranking(path.parent) or "file")
        self.model.refresh()
        return count

    def choose_flags(self) -> None:
        """Ask for a ``flags.csv`` (and for a project when none is open) and import it."""
        if self.project is None and not self._ask_for_project():
            return
        path = file_dialogs.open_file(
            self,
            self.settings,
            "flags",
            "Import flags of a label-refinement run",
            "Flags (flags.csv *.csv)",
        )
        if not path:
            return
        try:
            count = self.import_flags(path)
        except PathViewerError as error:
            QMessageBox.warning(self, "Import flags", str(error))
            return
        log.info("imported %d flags from %s", count, path)

    def _ask_for_project(self) -> bool:
        controller = self.project_controller
        answer = QMessageBox.question(
            self,
            "Review queue",
            "Review decisions are stored in a project. Create a new project folder now?",
        )
        if answer != QMessageBox.StandardButton.Yes:
            return False
        folder = file_dialogs.choose_folder(self, self.settings, "projects", "New project folder")
        if not folder:
            return False
        try:
            if controller is not None:
                controller.open(folder, create=True)  # projectChanged sets our project
            else:
                self.set_project(Project.create(folder))
        except PathViewerError as error:
            QMessageBox.warning(self, "Project", str(error))
            return False
        return self.project is not None

    # ---- decisions

    def author(self) -> str:
        return reviewer_name(self.settings)

    def decide(self, row: int, decision: str, label: object = None) -> None:
        """Store a decision on ``row`` (undoable) and move to the next pending item."""
        try:
            stored = self.model.decide(
                row, decision, label=None if label is None else str(label), author=self.author()
            )
        except PathViewerError as error:
            QMessageBox.warning(self, "Review", str(error))
            return
        self.undo_stack.push(ReviewDecisionCommand(self, stored))
        following = self.model.next_pending_row(row)
        if following is not None:
            self.gallery.setCurrentIndex(self.model.index(following))

    def retract(self, stored: StoredDecision) -> bool:
        """Undo: retract ``stored`` in the store and move the queue back to its patch.

        Returns False (after a warning) when the store refused, the decision standing.
        """
        try:
            row = self.model.undecide(stored, author=self.author())
        except PathViewerError as error:
            QMessageBox.warning(self, "Review", f"The decision was not undone: {error}")
            return False
        if row is not None:
            self.gallery.setCurrentIndex(self.model.index(row))
        self.draw_flags()
        return True

    def record_again(self, stored: StoredDecision) -> StoredDecision | None:
        """Redo: record an undone decision again, as it was taken; returns the new record."""
        row = self.model.row_of(stored.flag_id)
        if row is None:
            self.model.refresh()
            row = self.model.row_of(stored.flag_id)
        if row is None:
            QMessageBox.warning(self, "Review", "The patch is no longer in the queue.")
            return None
        try:
            again = self.model.decide(
                row, stored.decision, stored.label, author=self.author(), replay=stored
            )
        except PathViewerError as error:
            QMessageBox.warning(self, "Review", f"The decision was not redone: {error}")
            return None
        following = self.model.next_pending_row(row)
        self.gallery.setCurrentIndex(self.model.index(row if following is None else following))
        self.draw_flags()
        return again

    def use_undo_group(
        self, group: QUndoGroup, fallback: Callable[[], QUndoStack | None], dock: QWidget
    ) -> None:
        """Share the window's Edit > Undo (``group``): the review decisions are its active
        stack while the focus is in ``dock``, ``fallback()`` (the slide's annotation edits)
        otherwise.  The dock's own Ctrl+Z actions give their keys up to Edit > Undo."""
        group.addStack(self.undo_stack)
        for action in (self.undo_action, self.redo_action):
            action.setShortcuts([])
        self._undo_group, self._undo_fallback, self._undo_dock = group, fallback, dock
        app = QApplication.instance()
        if isinstance(app, QApplication):
            # A slot of this panel: Qt drops the connection when the panel goes.
            app.focusChanged.connect(self._focus_changed)

    def _focus_changed(self, _old: QWidget | None, new: QWidget | None) -> None:
        group, dock = self._undo_group, self._undo_dock
        if group is None or dock is None or new is None:
            return  # the window lost focus: keep what Edit > Undo acts on
        if new is dock or dock.isAncestorOf(new):
            group.setActiveStack(self.undo_stack)
        elif group.activeStack() is self.undo_stack:
            group.setActiveStack(self._undo_fallback())  # type: ignore[arg-type]

    # ---- viewer

    def _current_changed(self, row: int) -> None:
        self.model.mark_shown(row)
        if row >= 0 and self.follow_check.isChecked() and self.isVisible():
            self.show_row(row, quiet=True)

    def _set_follow(self, on: bool) -> None:
        self.settings.setValue(FOLLOW_SETTING, bool(on))
        row = self.gallery.currentIndex().row()
        if on and row >= 0 and self.isVisible():
            self.show_row(row, quiet=True)

    def show_row(self, row: int, quiet: bool = False) -> bool:
        """Show the patch of ``row`` in the viewer: open its slide, centre on it, draw its box.

        The zoom stays unless the patch would not be visible at it (too small on screen, or
        larger than the view).  ``quiet`` (following the queue) reports a slide that cannot
        be opened in the status bar rather than in a dialog.
        """
        window = self.window_
        if window is None or not 0 <= row < len(self.model.items):
            return False
        flag = self.model.items[row].flag
        path = resolve_slide_path(flag.slide_path, self.model.slide_roots)
        view = window.slide_view
        current = view.current_slide
        if current is None or not same_slide(current.path, path):
            try:
                if not window.open_slide(path, raise_errors=quiet):
                    return False
            except SlideError as error:
                window.statusBar().showMessage(f"Review: {error}", 8000)
                return False
        cx, cy = flag.x + flag.width / 2, flag.y + flag.height / 2
        scale = self._scale_for(flag)
        if scale is not None:
            view.set_scale(scale)
        view.center_on(cx, cy)
        self._remove_highlight()
        item = QGraphicsRectItem(
            float(flag.x), float(flag.y), float(flag.width), float(flag.height)
        )
        pen = QPen(QColor(255, 215, 0), 3)
        pen.setCosmetic(True)  # same width on screen at every zoom
        item.setPen(pen)
        item.setBrush(QBrush(Qt.BrushStyle.NoBrush))
        item.setZValue(HIGHLIGHT_Z)
        item.setToolTip(f"given {flag.given}, suggested {flag.suggested}")
        view.add_overlay(item)
        self.highlight = item
        return True

    def _scale_for(self, flag: FlagRecord) -> float | None:
        """The zoom (screen px per level-0 px) to show ``flag`` at; None: keep the zoom.

        The zoom is kept while the patch is visible at it; else :data:`CONTEXT_MAGNIFICATION`
        when the slide knows its objective power and the patch shows at it, else the zoom at
        which the patch spans :data:`PATCH_SHARE_OF_VIEW` of the view.
        """
        assert self.window_ is not None
        view = self.window_.slide_view
        viewport = view.viewport().rect()
        limit = min(viewport.width(), viewport.height())
        side = max(flag.width, flag.height, 1)

        def visible(scale: float) -> bool:
            return MIN_PATCH_ON_SCREEN <= side * scale <= limit

        if visible(view.scale_factor()):
            return None
        slide = view.current_slide
        power = slide.objective_power if slide is not None else None
        if power and visible(CONTEXT_MAGNIFICATION / power):
            return CONTEXT_MAGNIFICATION / power
        return max(limit * PATCH_SHARE_OF_VIEW, MIN_PATCH_ON_SCREEN) / side

    def _remove_highlight(self) -> None:
        item, self.highlight = self.highlight, None
        if self.window_ is not None:
            self.window_.slide_view.remove_overlay(item)

    def _forget_highlight(self, *_args: object) -> None:
        # The view detached the highlight with the old slide.
        self.highlight = None

    # ---- labels

    def _update_counts(self, reviewed: int, left: int) -> None:
        if self.project is None:
            self.counts_label.setText("no project — open one (File) or import flags")
        else:
            disputed = len(self.project.disputed())
            text = f"reviewed {reviewed} · left {left}"
            if disputed:
                text += f" · {disputed} disputed between reviewers"
                self.counts_label.setToolTip(
                    "Reviewers gave these patches different labels; they stay untrusted until"
                    " adjudicated (pathviewer labels agreement / adjudicate)"
                )
            self.counts_label.setText(text)

    def _update_keys(self) -> None:
        classes = self.project.classes() if self.project is not None else {}
        self.delegate.classes = classes
        names = list(classes)[:9]
        self.gallery.class_names = names
        chips = "  ".join(
            f"<b>{n}</b>&nbsp;<span style='color:{_css(classes[name])}'>■</span>&nbsp;{name}"
            for n, name in enumerate(names, start=1)
        )
        self.keys_label.setText(
            (chips + "<br>" if chips else "")
            + (
                "<b>blind review</b>: choose a class · <b>K</b> keep given · <b>U</b> unsure · "
                if self.model.blind
                else "<b>A</b> accept suggestion · <b>K</b> keep given · <b>U</b> unsure · "
            )
            + "arrows move · click/Space: show in viewer · <b>Ctrl+Z</b> undo"
        )

    def decide_region(self, decision: str) -> int:
        """``decision`` for every undecided flag inside the selected region; returns how many."""
        region = self.selected_region() if self.selected_region is not None else None
        if region is None:
            QMessageBox.information(
                self,
                "Review",
                "Select a region on the slide first (draw a polygon or rectangle around the"
                " flags, or click one), then choose the decision for the flags inside it.",
            )
            return 0
        slide_path, geometry = region
        items = self.model.items
        inside = [
            row
            for row in flags_inside([item.flag for item in items], slide_path, geometry)
            if self.model.data(self.model.index(row), DecisionRole) is None
        ]
        if inside:  # one undo step takes back the whole region
            self.undo_stack.beginMacro(f"review: {decision} {len(inside)} flags in a region")
            try:
                for row in inside:
                    try:
                        stored = self.model.decide(row, decision, author=self.author())
                    except PathViewerError as error:
                        QMessageBox.warning(self, "Review", str(error))
                        break
                    self.undo_stack.push(ReviewDecisionCommand(self, stored))
            finally:
                self.undo_stack.endMacro()
        if self.window_ is not None:
            self.window_.statusBar().showMessage(
                f"{decision}: {len(inside)} flags inside the selected region", 8000
            )
        self.draw_flags()
        return len(inside)

    def _slide_shown(self) -> None:
        self.flags_item = None  # the view detached it with the old slide
        self.draw_flags()

    def draw_flags(self) -> None:
        """Outline the flags of the slide shown (yellow undecided, grey decided)."""
        window = self.window_
        if window is None:
            return
        view = window.slide_view
        item, self.flags_item = self.flags_item, None
        view.remove_overlay(item)
        slide = view.current_slide
        if slide is None or not self.flags_check.isChecked():
            return
        pending, decided = QPainterPath(), QPainterPath()
        for row, queue_item in enumerate(self.model.items):
            flag = queue_item.flag
            if not same_slide(flag.slide_path, slide.path):
                continue
            target = decided if self.model.data(self.model.index(row), DecisionRole) else pending
            target.addRect(QRectF(flag.x, flag.y, flag.width, flag.height))
        group = QGraphicsPathItem()
        for path, colour in ((decided, QColor(150, 150, 150)), (pending, QColor(255, 215, 0))):
            child = QGraphicsPathItem(path, group)
            pen = QPen(colour, 2)
            pen.setCosmetic(True)
            child.setPen(pen)
        group.setZValue(HIGHLIGHT_Z - 1)
        view.add_overlay(group)
        self.flags_item = group

    def set_adjudicating(self, on: bool) -> None:
        """Show the disputed patches (decisions settle them) or the review queue."""
        if self.model.adjudicating != bool(on):
            # A redo must replay a decision in the mode it was taken in (a review or an
            # adjudication), so the undo history is that of the mode shown.
            self.undo_stack.clear()
        self.model.adjudicating = bool(on)
        self.mode_combo.blockSignals(True)
        self.mode_combo.setCurrentIndex(1 if on else 0)
        self.mode_combo.blockSignals(False)
        self.model.refresh()

    def set_blind(self, blind: bool) -> None:
        """Blind review on or off (remembered)."""
        self.model.set_blind(blind)
        self.settings.setValue(BLIND_SETTING, bool(blind))
        if self.blind_check.isChecked() != blind:
            self.blind_check.setChecked(blind)
        self._update_keys()

    def _update_agreement(self) -> None:
        """How often the decisions followed the suggestion, seen and unseen."""
        project = self.project
        if project is None:
            self.agreement_label.setText("")
            return
        report = project.suggestion_agreement()
        parts = []
        for group, name in (("shown", "suggestion shown"), ("blind", "blind")):
            entry = report[group]
            if entry["decisions"]:
                rate = float(entry["rate"] or 0.0)
                seconds = entry["median_seconds"]
                timing = f", median {seconds:.1f} s" if seconds is not None else ""
                parts.append(f"{name}: {rate:.0%} of {entry['decisions']}{timing}")
        self.agreement_label.setText(
            "Decisions matching the suggestion — " + "; ".join(parts) if parts else ""
        )

    def _select_first(self) -> None:
        if self.model.rowCount():
            self.gallery.setCurrentIndex(self.model.index(0))

    def shutdown(self) -> None:
        """Stop the thumbnail threads (the window calls this when it closes)."""
        self.model.loader.reset()
        self.model.loader.wait()


def _css(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def install(
    window: MainWindow,
    project: ProjectController,
    selected_region: Callable[[], tuple[str, BaseGeometry] | None] | None = None,
    undo_group: QUndoGroup | None = None,
    other_undo: Callable[[], QUndoStack | None] = lambda: None,
) -> ReviewPanel:
    """Add the Review queue dock (``window.docks["review"]``, following ``project``) and its
    Tools menu entries; return the dock's panel.

    ``selected_region`` gives the slide and area of the region selected in the viewer (the
    annotation tools' selection): the dock decides every flag inside it at once.
    ``undo_group`` is the group behind Edit > Undo: the dock's decisions join it, active while
    the focus is in the dock, and ``other_undo()`` (the annotation edits) is active elsewhere.
    """
    panel = ReviewPanel(window, window.settings, project)
    panel.selected_region = selected_region
    dock = QDockWidget("Review queue", window)
    dock.setObjectName("dock-review")
    dock.setWidget(panel)
    if undo_group is not None:
        panel.use_undo_group(undo_group, other_undo, dock)
    project.projectChanged.connect(panel.set_project)
    if project.project is not None:
        panel.set_project(project.project)
    window.add_dock(dock, Qt.DockWidgetArea.RightDockWidgetArea, "review", tab_with="properties")
    dock.hide()

    def show_dock() -> None:
        dock.show()
        dock.raise_()
        annotations = window.docks.get("annotations")
        if annotations is not None and annotations.isVisible():
            # The gallery needs the height: the annotation list keeps a strip below it.
            height = window.height()
            window.resizeDocks(
                [dock, annotations], [int(height * 0.7), int(height * 0.3)], Qt.Orientation.Vertical
            )
        panel.gallery.setFocus()

    def import_flags() -> None:
        show_dock()
        panel.choose_flags()

    import_action = QAction("Import review flags (flags.csv)…", window)
    import_action.triggered.connect(import_flags)
    review_action = QAction("Review queue", window)
    review_action.triggered.connect(show_dock)
    panel.show_dock = show_dock
    window.menu("tools").addAction(review_action)
    window.menu("tools").addAction(import_action)
    panel.menu_actions = (review_action, import_action)
    return panel
