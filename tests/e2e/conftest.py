"""The end-to-end stack (tests/stack.py) on the session's containerd; one stack per test module, because
two vfhotplug plugins on one containerd would both act on every annotated pod."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from testbed.containerd import Containerd
from tests.stack import SimStack


def stack_for(containerd: Containerd, **kw: object) -> Iterator[SimStack]:
    work = Path(tempfile.mkdtemp(prefix="vfh-e2e-"))  # short: unix socket paths
    # The specs go where the runtime reads them: containerd 2.x turns the pods' CDI devices into nodes.
    kw.setdefault("cdi_spec_dir", containerd.layout.cdi_spec_dir)
    stack = SimStack(work, containerd.nri_socket, **kw)  # type: ignore[arg-type]
    try:
        yield stack.start()
    finally:
        try:
            containerd.remove_all_pods()  # while the plugin runs, so it gives the VFs back
        finally:
            # Always: a plugin left running re-registers with every later containerd on this socket and
            # acts on the next modules' pods beside their own plugin.
            stack.stop()
            shutil.rmtree(work, ignore_errors=True)
