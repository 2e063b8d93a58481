"""Reviewer agreement (kappa) and adjudication of disputed patches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pathviewer.core.agreement import fleiss_kappa, reviewer_agreement
from pathviewer.core.store import Project


def test_cohen_kappa_of_a_hand_computed_case() -> None:
    # Two reviewers, 10 patches: they agree on 4 Tumor and 4 Normal, disagree on 2.
    # p_o = 0.8; A says Tumor 5/10, B says Tumor 5/10: p_e = 0.5*0.5 + 0.5*0.5 = 0.5;
    # kappa = (0.8 - 0.5) / (1 - 0.5) = 0.6.
    a = ["T"] * 4 + ["N"] * 4 + ["T", "N"]
    b = ["T"] * 4 + ["N"] * 4 + ["N", "T"]
    labels = {i: {"A": x, "B": y} for i, (x, y) in enumerate(zip(a, b, strict=True))}
    report = reviewer_agreement(labels)
    (pair,) = report["pairs"]
    assert pair["patches"] == 10 and pair["agreement"] == pytest.approx(0.8)
    assert pair["kappa"] == pytest.approx(0.6)
    # With two classes, one-against-the-rest kappa of either class is the same 0.6.
    assert report["per_class"] == {"N": pytest.approx(0.6), "T": pytest.approx(0.6)}
    assert report["fleiss"] is None and report["disputed"] == 2


def test_fleiss_kappa_of_a_hand_computed_case() -> None:
    # 4 items, 3 raters, 2 categories.  Rows: [3,0] [0,3] [2,1] [1,2].
    # P_i = (sum n_ij^2 - 3) / 6: 1, 1, 1/3, 1/3 -> P_bar = 2/3; p = [0.5, 0.5] -> P_e = 0.5;
    # kappa = (2/3 - 1/2) / (1/2) = 1/3.
    table = np.array([[3, 0], [0, 3], [2, 1], [1, 2]])
    assert fleiss_kappa(table) == pytest.approx(1 / 3)
    assert fleiss_kappa(np.array([[3, 0], [3, 0]])) is None
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(np.array([[2, 0], [3, 0]]))


def _project_with_flags(tmp_path: Path, n: int = 4) -> tuple[Project, list[int]]:
    project = Project.create(tmp_path / "p")
    project.add_slide("/s/one.svs")
    flags = tmp_path / "flags.csv"
    rows = [f"/s/one.svs,{i * 10},0,10,10,Normal,Tumor,0.9,0.8" for i in range(n)]
    flags.write_text("slide,x,y,width,height,given,suggested,confidence,g\n" + "\n".join(rows))
    project.import_flags(flags)
    return project, [f.patch_label_id for f in project.review_queue()]


def test_disagreement_leaves_a_patch_untrusted_until_adjudicated(tmp_path: Path) -> None:
    project, (one, two, three, _four) = _project_with_flags(tmp_path)
    project.record_review(one, "accept", author="A")
    project.record_review(one, "accept", author="B")  # agree: trusted Tumor
    project.record_review(two, "accept", author="A")
    project.record_review(two, "keep", author="B")  # disagree: Tumor vs Normal
    project.record_review(three, "accept", author="A")
    project.record_review(three, "unsure", author="B")  # unsure is no label: not a dispute
    by_id = {r.id: r for r in project.patch_labels()}
    assert (by_id[one].label, by_id[one].trusted) == ("Tumor", True)
    assert by_id[two].trusted is False and by_id[three].trusted is False
    assert project.disputed() == {two: {"A": "Tumor", "B": "Normal"}}
    project.adjudicate(two, "Tumor", author="lead", note="nuclear atypia")
    assert project.disputed() == {}
    by_id = {r.id: r for r in project.patch_labels()}
    assert (by_id[two].label, by_id[two].trusted) == ("Tumor", True)
    # A later review does not undo the adjudication.
    project.record_review(two, "keep", author="C")
    assert {r.id: r for r in project.patch_labels()}[two].label == "Tumor"
    assert "adjudicated" in [row[2] for row in project.audit_rows()]
    project.close()


def test_agreement_command_reports_kappa_and_writes_the_dispute_queue(
    tmp_path: Path, capsys
) -> None:
    from pathviewer.cli import main

    project, ids = _project_with_flags(tmp_path)
    for pid, (a, b) in zip(
        ids,
        [("accept", "accept"), ("keep", "keep"), ("accept", "keep"), ("keep", "keep")],
        strict=True,
    ):
        project.record_review(pid, a, author="A")
        project.record_review(pid, b, author="B")
    project.close()
    folder = str(tmp_path / "p")
    out = tmp_path / "disputed.csv"
    capsys.readouterr()
    assert main(["labels", "agreement", "--project", folder, "--disputed", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    (pair,) = report["pairs"]
    assert pair["agreement"] == pytest.approx(0.75) and report["disputed"] == 1
    lines = out.read_text().strip().splitlines()
    assert lines[0].startswith("patch_label_id,slide,x,y,width,height") and len(lines) == 2
    pid = lines[1].split(",")[0]
    argv = ["labels", "adjudicate", "--project", folder, "--patch", pid, "--label", "Tumor"]
    assert main([*argv, "--author", "lead"]) == 0
    with Project.open(folder) as reopened:
        assert reopened.disputed() == {}
    assert (
        main(["labels", "adjudicate", "--project", folder, "--patch", "999", "--label", "T"]) == 2
    )
