"""Benchmarks: ``python -m pathviewer.bench NAME [options]`` (see :mod:`pathviewer.bench.__main__`)."""
