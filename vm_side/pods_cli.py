"""`vfhotplug pods`: in the VM, the plugin's pods, their VFs and data-path health (read-only)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vm_side.pods_view import DEFAULT_STATE_DIR, show_pods


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vfhotplug pods", description=__doc__)
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="the plugin's [pods] state_dir")
    args = p.parse_args(argv)
    return show_pods(args.state_dir)


if __name__ == "__main__":
    sys.exit(main())
