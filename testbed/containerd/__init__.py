"""Real containerd releases with NRI (1.7 and 2.1, see RUNTIMES), each run from the private prefix
that setup.sh builds under build/.

Typical use (as root, after ``make testbed-containerd``)::

    cd = Containerd(CONTAINERD_2_1, "main")
    cd.start()
    rt = cd.runtime()
    pod = run_pod(rt, "p1")
    ...
    cd.cleanup()
"""

from pathlib import Path

from .config import BUSYBOX_IMAGE, K8S_NAMESPACE, PAUSE_IMAGE, Layout
from .cri import (
    RuntimeStub,
    create_container,
    exec_sync,
    pod_config,
    run_pod,
    start_container,
    stop_and_remove_pod,
)
from .daemon import Containerd, ContainerdError
from .hostpaths import HostPaths
from .runtime import CONTAINERD_1_7, CONTAINERD_2_1, RUNTIMES, Runtime

__all__ = [
    "BUSYBOX_IMAGE",
    "CONTAINERD_1_7",
    "CONTAINERD_2_1",
    "K8S_NAMESPACE",
    "PAUSE_IMAGE",
    "RUNTIMES",
    "Containerd",
    "ContainerdError",
    "HostPaths",
    "Layout",
    "Runtime",
    "RuntimeStub",
    "create_container",
    "default_prefix",
    "exec_sync",
    "pod_config",
    "run_pod",
    "start_container",
    "stop_and_remove_pod",
]


def default_prefix() -> Path:
    """build/containerd of this checkout, where setup.sh unpacks containerd 1.7 (with the bookworm runc
    and busybox the OCI hook tests borrow)."""
    return CONTAINERD_1_7.prefix
