"""The Training dock: jobs on a worker thread with live curves, the run list, settings forms."""
