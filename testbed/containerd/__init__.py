"""A real containerd 1.7 with NRI, run from the private prefix that setup.sh builds under build/.

Typical use (as root, after ``make testbed-containerd``)::

    cd = Containerd(default_prefix(), "main")
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

__all__ = [
    "BUSYBOX_IMAGE",
    "K8S_NAMESPACE",
    "PAUSE_IMAGE",
    "Containerd",
    "ContainerdError",
    "HostPaths",
    "Layout",
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
    """build/containerd of this checkout, where setup.sh unpacks containerd."""
    return Path(__file__).resolve().parents[2] / "build" / "containerd"
