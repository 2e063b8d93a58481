"""Annotation model rules and QuPath GeoJSON details (the ASAP side is in test_asap.py)."""

from __future__ import annotations

from pathlib import Path


def test_one_tumour_class_rule_for_ground_truth_and_outlines() -> None:
    from pathviewer.core.annotations import is_tumour_class

    for name in (None, "", "Tumor", "tumour", "Tumor: Positive", "Metastasis", "CANCER"):
        assert is_tumour_class(name), name
    for name in ("Normal", "Stroma", "Other", "Tumor-adjacent stroma", "Necrosis"):
        assert not is_tumour_class(name), name


def test_what_qupath_writes_survives_a_round_trip(tmp_path: Path) -> None:
    """A feature as QuPath 0.5+ exports it: UUID id, derived class, lock, metadata, measurements."""
    import gzip
    import json

    from pathviewer.core.annotations import read_annotations, write_annotations

    feature = {
        "type": "Feature",
        "id": "5b8e8c4e-4f4b-4d3e-9b8f-1d2c3b4a5f60",
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [40, 0], [40, 30], [0, 0]]]},
        "properties": {
            "objectType": "annotation",
            "classification": {"names": ["Tumor", "Positive"], "color": [200, 0, 0]},
            "isLocked": True,
            "metadata": {"reviewer": "AB", "stain": "H&E"},
            "measurements": {"Num Detections": 12},
        },
    }
    source = tmp_path / "q.geojson"
    source.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    (a,) = read_annotations(source)
    assert a.uid == feature["id"] and a.class_name == "Tumor: Positive"
    assert a.locked and a.metadata == {"reviewer": "AB", "stain": "H&E"}
    out = tmp_path / "q.geojson.gz"  # QuPath's compressed export
    write_annotations(out, [a])
    written = json.loads(gzip.decompress(out.read_bytes()))["features"][0]
    assert written["id"] == feature["id"]
    assert written["properties"]["isLocked"] is True
    assert written["properties"]["metadata"] == feature["properties"]["metadata"]
    (b,) = read_annotations(out)
    assert b == a


def test_tiatoolbox_object_type_on_the_feature_is_read(tmp_path: Path) -> None:
    import json

    from pathviewer.core.annotations import read_geojson

    feature = {
        "type": "Feature",
        "objectType": "detection",
        "geometry": {"type": "Point", "coordinates": [5, 6]},
        "properties": {},
    }
    path = tmp_path / "t.json"
    path.write_text(json.dumps([feature]))
    assert read_geojson(path)[0].object_type == "detection"
