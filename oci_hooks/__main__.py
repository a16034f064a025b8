"""`vfhotplug-hook`, the OCI hook entry of vfhotplug (podman, runc, crun), over the NRI plugin's core.

Runtimes that register a hook in config.json run it for every container, most of which ask for no VFs:
for those this module answers from stdin alone, importing nothing beyond json, and everything else goes
to `oci_hooks.cli`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vm_side.annotations import ANNOTATION

if TYPE_CHECKING:
    from vm_side.sysfs import GuestSysfs

_STDIN_STAGES = ("precreate", "createRuntime", "poststop", "auto")


def main(argv: Sequence[str] | None = None, *, make_sysfs: Callable[[Path], GuestSysfs] | None = None) -> int:
    """`make_sysfs` lets a test run the real entry over a simulated guest kernel; nothing else sets it."""
    started = time.perf_counter()
    args = list(sys.argv[1:] if argv is None else argv)
    text = None
    if args and args[-1] in _STDIN_STAGES:
        text = sys.stdin.read()
        out = _nothing_to_do(args[-1], text)
        if out is not None:
            sys.stdout.write(out)
            return 0
    from oci_hooks.cli import run

    return run(args, text, make_sysfs, started)


def _nothing_to_do(stage: str, text: str) -> str | None:
    """What to print when the input asks for no VFs (a precreate config goes back as it came), else None.
    Malformed input is not judged here: the full path reports it."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    annotations = doc.get("annotations") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or not isinstance(annotations or {}, dict)
        or ANNOTATION in (annotations or {})
    ):
        return None
    is_config = stage == "precreate" or (stage == "auto" and "status" not in doc)
    return text if is_config else ""


if __name__ == "__main__":
    sys.exit(main())
