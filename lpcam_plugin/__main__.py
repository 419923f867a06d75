"""``python -m lpcam_plugin`` runs the ``lpcam`` command line."""
import sys

from lpcam_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main())
