"""One rule for which file a slide path names (core.identity)."""

from __future__ import annotations

import os
from pathlib import Path

from pathviewer.core.identity import SlidePathMap, same_slide, slide_path_key


def test_every_spelling_of_one_file_has_one_key(tmp_path: Path) -> None:
    slide = tmp_path / "slides" / "a.svs"
    slide.parent.mkdir()
    slide.write_bytes(b"x")
    link = tmp_path / "link"
    link.symlink_to(slide.parent)
    spellings = [
        slide,
        tmp_path / "slides" / "." / "a.svs",
        tmp_path / "other" / ".." / "slides" / "a.svs",
        link / "a.svs",
    ]
    assert {slide_path_key(p) for p in spellings} == {str(slide)}
    assert slide_path_key("a.svs", base=tmp_path / "slides") == str(slide)
    assert same_slide(link / "a.svs", slide)
    assert not same_slide(slide, tmp_path / "slides" / "b.svs")


def test_a_missing_file_or_a_link_loop_still_gets_an_absolute_key(tmp_path: Path) -> None:
    assert slide_path_key("missing.svs", base=tmp_path) == str(tmp_path / "missing.svs")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    key = slide_path_key(loop / "a.svs")
    assert os.path.isabs(key)


def test_the_path_map_returns_the_stored_string_of_a_known_file(tmp_path: Path) -> None:
    slide = tmp_path / "a.svs"
    slide.write_bytes(b"x")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "via").symlink_to(tmp_path)
    names = SlidePathMap([str(slide)])
    assert names.stored("via/a.svs", base=tmp_path / "run") == str(slide)
    assert names.stored(tmp_path / "b.svs") == str(tmp_path / "b.svs")
