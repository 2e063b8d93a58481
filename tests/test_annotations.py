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


#: Features laid out as QuPath 0.4/0.5 writes them (PathObjectTypeAdapters: ``id`` UUID,
#: then ``geometry``, then ``properties`` with objectType, name, the object's own ``color``,
#: ``classification``, ``isLocked`` only when locked, ``measurements`` as an object and
#: ``metadata``), plus a TIAToolbox feature with ``objectType`` on the feature.
QUPATH_FEATURES = [
    {
        "type": "Feature",
        "id": "0f6b1c1e-9a3e-4c55-8d7e-2a4f5b6c7d80",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[100, 100], [900, 120], [880, 700], [120, 650], [100, 100]]],
        },
        "properties": {
            "objectType": "annotation",
            "name": "Invasive front",
            "color": [255, 200, 0],
            "classification": {"names": ["Tumor", "Positive"], "color": [200, 0, 0]},
            "isLocked": True,
            "measurements": {"Area µm^2": 123456.5, "Num Detections": 42.0},
            "metadata": {"reviewer": "AB", "note": "re-check"},
        },
    },
    {
        "type": "Feature",
        "id": "a2c4e6f8-1b3d-4f5a-8c7e-9d0b1a2c3e4f",
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [50, 0], [50, 50], [0, 0]]]},
        "properties": {"objectType": "detection", "color": -16711936},  # packed ARGB green
    },
    {
        "type": "Feature",
        "objectType": "tile",
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [8, 0], [8, 8], [0, 8], [0, 0]]]},
        "properties": {"measurements": {"prob": 0.25}},
    },
]


def test_a_qupath_export_survives_import_edit_and_export_through_a_project(tmp_path: Path) -> None:
    import dataclasses
    import gzip
    import json

    import shapely
    from shapely.geometry import shape

    from pathviewer.core.annotations import read_annotations
    from pathviewer.core.store import Project

    source = tmp_path / "qupath.geojson.gz"
    collection = {"type": "FeatureCollection", "features": QUPATH_FEATURES}
    source.write_bytes(gzip.compress(json.dumps(collection).encode()))
    imported = read_annotations(source)
    assert [a.object_type for a in imported] == ["annotation", "detection", "tile"]
    assert imported[0].class_name == "Tumor: Positive" and imported[0].color == (200, 0, 0)
    assert imported[0].object_color == (255, 200, 0)
    assert imported[1].object_color == (0, 255, 0)
    project = Project.create(tmp_path / "p")
    slide = project.add_slide("s.svs")
    ids = project.add_annotations(slide, imported)
    # an edit: the detection is moved; what QuPath wrote stays with it
    moved = project.annotation(ids[1]).annotation
    project.update_annotation(
        ids[1], dataclasses.replace(moved, geometry=shapely.affinity.translate(moved.geometry, 5))
    )
    out = tmp_path / "out.geojson.gz"
    assert project.export_annotations(slide, out) == 3
    project.close()
    written = json.loads(gzip.decompress(out.read_bytes()))["features"]
    first, second, third = written
    original = QUPATH_FEATURES[0]
    assert first["id"] == original["id"]
    assert shape(first["geometry"]).equals(shape(original["geometry"]))
    props, source_props = first["properties"], original["properties"]
    for key in ("objectType", "name", "color", "isLocked", "measurements", "metadata"):
        assert props[key] == source_props[key], key
    assert props["classification"]["color"] == [200, 0, 0]
    assert read_annotations(out)[0].class_name == "Tumor: Positive"
    assert second["id"] == QUPATH_FEATURES[1]["id"]
    assert second["properties"]["color"] == [0, 255, 0]
    assert second["properties"]["objectType"] == "detection"
    assert shapely.get_coordinates(shape(second["geometry"]))[0].tolist() == [5.0, 0.0]
    assert third["properties"]["objectType"] == "tile"
    assert third["properties"]["measurements"] == {"prob": 0.25}
    assert "color" not in third["properties"] and "isLocked" not in third["properties"]
    assert len(third["id"]) == 36  # no id in the file: the project gave it a UUID
