"""``python -m lpcam_plugin.check_host --driver CONFIG.json``: the driver subprocess ``lpcam check-host`` starts."""
import sys
from pathlib import Path

from lpcam_plugin.check_host.driver import run_driver

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--driver":
        sys.stderr.write("usage: python -m lpcam_plugin.check_host --driver CONFIG.json (run by lpcam check-host)\n")
        sys.exit(2)
    sys.exit(run_driver(Path(sys.argv[2])))
