"""``python -m pathviewer`` behaves exactly like the ``pathviewer`` command."""

import sys

from pathviewer.cli import main

if __name__ == "__main__":
    # PyInstaller bundles and torch DataLoader workers re-enter the entry point in child processes.
    import multiprocessing

    multiprocessing.freeze_support()
    sys.exit(main())
