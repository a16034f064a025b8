"""`vfhotplug-hook`, the OCI hook entry of vfhotplug (podman, runc, crun), over the NRI plugin's core.

Runtimes that register a hook in config.json run it for every container, most of which ask for no VFs:
for those this module answers from stdin alone, importing nothing beyond json, and everything else goes
to `oci_hooks.cli`. Run as a process, it ends without the interpreter's finalization (see `_end_process`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from vm_side.annotations import ANNOTATION

if TYPE_CHECKING:
    from vm_side.sysfs import GuestSysfs

_STDIN_STAGES = ("precreate", "createRuntime", "poststop", "auto")


def main(argv: Sequence[str] | None = None, *, make_sysfs: Callable[[Path], GuestSysfs] | None = None) -> int:
    """`argv` None: this process's command line, and the process ends here with the exit status.
    `make_sysfs` lets a test run the real entry over a simulated guest kernel; nothing else sets it."""
    code = _run(sys.argv[1:] if argv is None else argv, make_sysfs)
    if argv is None:
        _end_process(code)
    return code


def _run(argv: Sequence[str], make_sysfs: Callable[[Path], GuestSysfs] | None) -> int:
    started = time.perf_counter()
    args = list(argv)
    text = None
    if args and args[-1] in _STDIN_STAGES:
        text = sys.stdin.read()
        out = _nothing_to_do(args[-1], text)
        if out is not None:
            sys.stdout.write(out)
            return 0
    from oci_hooks.cli import run

    return run(args, text, make_sysfs, started)


def _end_process(code: int) -> NoReturn:
    """Exits without the interpreter's finalization: tearing down grpc and the core's modules takes 30-40
    ms, a large share of a hook stage. Every file the hook wrote is closed by now (records are replaced
    atomically); logs and stdio are flushed here. A thread that is not a daemon (none is expected) gets
    the ordinary exit, which waits for it; daemon threads end with the process either way."""
    threading = sys.modules.get("threading")
    main_thread = threading.main_thread() if threading is not None else None
    if threading is not None and any(not t.daemon and t is not main_thread for t in threading.enumerate()):
        sys.exit(code)
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # stdout closed under us: what the ordinary exit reports as status 120
        code = code or 120
    os._exit(code)


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
    main()
