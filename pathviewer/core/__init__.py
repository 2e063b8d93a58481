"""Qt-free core: slide I/O, tiling, tissue filter, synthetic cohort, annotations, project store."""
