"""The heatmap's display state and top regions, without Qt."""

from __future__ import annotations

import numpy as np
import pytest

from pathviewer.session.heatmap import MIN_REGION_PROB, HeatmapDisplay, find_regions


def test_display_settings_are_kept_in_range_and_names_are_checked() -> None:
    display = HeatmapDisplay().replace(opacity=1.7, threshold=-0.2)
    assert (display.opacity, display.threshold) == (1.0, 0.0)
    assert display.region_threshold == MIN_REGION_PROB  # threshold 0 is not one huge region
    assert display.replace(threshold=0.8).region_threshold == 0.8
    with pytest.raises(ValueError, match="colormap"):
        display.replace(colormap="rainbow")
    with pytest.raises(ValueError, match="finite"):
        display.replace(opacity=float("nan"))
    with pytest.raises(ValueError, match="region order"):
        display.replace(sort_by="size")


def test_regions_are_eight_connected_and_sorted_as_asked() -> None:
    probs = np.full((6, 6), np.nan, np.float32)
    probs[0, 0], probs[1, 1] = 0.95, 0.6  # diagonal neighbours: one region
    probs[4:6, 3:6] = 0.7  # a larger, cooler region
    probs[3, 0] = 0.4  # below the threshold
    by_max = find_regions(probs, 0.5, "max")
    assert [r.cells for r in by_max] == [2, 6]
    assert by_max[0].peak == (0, 0) and by_max[0].bbox == (0, 0, 1, 1)
    assert by_max[0].mean_prob == pytest.approx(0.775)
    assert [r.cells for r in find_regions(probs, 0.5, "area")] == [6, 2]
    assert find_regions(probs, 0.99) == []


def test_what_is_remembered_comes_back_and_bad_values_are_ignored() -> None:
    display = HeatmapDisplay().replace(colormap="magma", opacity=0.3, threshold=0.4, visible=False)
    again = HeatmapDisplay.from_remembered(display.remembered())
    assert again == display.replace(visible=True)  # hiding is never carried into a new session
    odd = HeatmapDisplay.from_remembered({"colormap": "rainbow", "opacity": "x", "threshold": 0.7})
    assert (odd.colormap, odd.opacity, odd.threshold) == ("viridis", 0.6, 0.7)
    assert HeatmapDisplay.from_remembered(["not", "a", "dict"]) == HeatmapDisplay()
