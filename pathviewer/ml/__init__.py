"""Qt-free machine learning: data, models, NGSD, label refinement, inference, metrics."""
