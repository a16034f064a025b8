"""One started instance of a test-bed release, as the tests and the soak use it: set up (idempotent), the
shipped NRI snippet's request timeout, started, and emptied of pods an interrupted run left."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

from .daemon import Containerd, ContainerdError
from .runtime import Runtime

_REPO = Path(__file__).resolve().parents[2]
NRI_TABLE = "io.containerd.nri.v1.nri"


def start_instance(runtime: Runtime, name: str) -> Containerd:
    """Raises ContainerdError when the set-up or the start fails (the message quotes their output)."""
    # Idempotent and fast once done; makes a bare `pytest` work without `make testbed-containerd`.
    setup = subprocess.run(
        ["bash", str(_REPO / "testbed/containerd/setup.sh"), runtime.version],
        capture_output=True,
        text=True,
        check=False,
    )
    if setup.returncode != 0:
        raise ContainerdError(
            f"testbed/containerd/setup.sh {runtime.version} failed:\n{setup.stdout}{setup.stderr}"
        )
    # The request timeout of the shipped snippet: tests run what users deploy (and a loaded 2-core CI
    # machine must not turn a cold two-VF attach into a dropped plugin).
    shipped = tomllib.loads(runtime.nri_snippet.read_text())
    instance = Containerd(
        runtime, name, nri_request_timeout=shipped["plugins"][NRI_TABLE]["plugin_request_timeout"]
    )
    instance.start()
    instance.remove_all_pods()  # left over by an interrupted earlier run
    return instance
