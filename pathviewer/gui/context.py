"""The composition root: builds the main window's features in their dependency order.

Every feature receives the features it uses as constructor or ``install`` arguments; none looks
another up on the window.  :class:`AppContext` is the typed record of what was built, reached
as ``window.context``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathviewer.gui.annotations.controller import AnnotationController
    from pathviewer.gui.compare import CompareController
    from pathviewer.gui.demo import DemoController
    from pathviewer.gui.heatmap.controller import HeatmapController
    from pathviewer.gui.heatmap.dock import HeatmapDock
    from pathviewer.gui.main_window import MainWindow
    from pathviewer.gui.project import ProjectController
    from pathviewer.gui.review.panel import ReviewPanel
    from pathviewer.gui.training.panel import TrainingPanel
    from pathviewer.gui.triage import TriagePanel
    from pathviewer.gui.viewer.display import DisplayController, DisplayPanel


@dataclass
class AppContext:
    """The features of one main window.

    Attributes
    ----------
    project
        The open project (annotation, review and training follow it).
    heatmap
        The heatmap overlay's controller; ``heatmap_panel`` is its dock's contents.
    training
        The Training dock's panel (it runs jobs and feeds ``heatmap``).
    annotations
        Annotation editing on the slide view (saved in ``project``).
    review
        The Review queue dock's panel (decisions saved in ``project``).
    triage
        The Triage dock's panel: the cohort in the order to look at it, and slide decisions.
    compare
        The grid of side-by-side views with linked navigation (compare runs, H&E vs IHC).
    display
        Brightness, contrast, gamma and stain channels of the slide shown; ``display_panel``
        is its dock's contents.
    demo
        The demo's driver while ``pathviewer demo`` runs, else None.
    """

    project: ProjectController
    heatmap: HeatmapController
    heatmap_panel: HeatmapDock
    training: TrainingPanel
    annotations: AnnotationController
    review: ReviewPanel
    triage: TriagePanel
    compare: CompareController
    display: DisplayController
    display_panel: DisplayPanel
    demo: DemoController | None = None


def build_features(window: MainWindow) -> AppContext:
    """Install every feature into ``window`` (the order is their dependency order)."""
    from pathviewer.gui import compare, preferences, project, triage
    from pathviewer.gui.annotations import controller as annotations
    from pathviewer.gui.heatmap import dock as heatmap
    from pathviewer.gui.review import panel as review
    from pathviewer.gui.training import panel as training
    from pathviewer.gui.viewer import display

    project_controller = project.install(window)
    heatmap_controller, heatmap_panel = heatmap.install(window)
    compare_controller = compare.install(window, heatmap=heatmap_controller)
    training_panel = training.install(
        window, project=project_controller, heatmap=heatmap_controller
    )
    annotation_controller = annotations.install(window, project=project_controller)
    review_panel = review.install(
        window,
        project=project_controller,
        selected_region=annotation_controller.selected_region,
        undo_group=annotation_controller.undo_group,
        other_undo=lambda: annotation_controller.slide_stack,
    )
    triage_panel = triage.install(
        window,
        project=project_controller,
        heatmap=heatmap_controller,
        ensure_project=annotation_controller.ensure_project,
    )
    display_controller, display_panel = display.install(
        window, selected_region=annotation_controller.selected_region
    )
    preferences.install(window, annotations=annotation_controller, heatmap=heatmap_controller)
    context = AppContext(
        project=project_controller,
        heatmap=heatmap_controller,
        heatmap_panel=heatmap_panel,
        training=training_panel,
        annotations=annotation_controller,
        review=review_panel,
        triage=triage_panel,
        compare=compare_controller,
        display=display_controller,
        display_panel=display_panel,
    )
    # A project refinement run's flags go straight to the review queue.
    training_panel.trainingFinished.connect(review_panel.offer_run_flags)
    window.context = context
    window.restore_layout()
    # Every feature listens to the project by now: the last project's annotations, review
    # queue and decisions show as they were when the app closed.
    project_controller.reopen_last()
    return context
