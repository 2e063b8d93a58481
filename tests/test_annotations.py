def test_one_tumour_class_rule_for_ground_truth_and_outlines() -> None:
    from pathviewer.core.annotations import is_tumour_class

    for name in (None, "", "Tumor", "tumour", "Tumor: Positive", "Metastasis", "CANCER"):
        assert is_tumour_class(name), name
    for name in ("Normal", "Stroma", "Other", "Tumor-adjacent stroma", "Necrosis"):
        assert not is_tumour_class(name), name
