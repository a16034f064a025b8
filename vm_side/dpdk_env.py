"""Per-pod DPDK environment for ``dpdk`` mode: a file prefix of its own, a runtime folder mounted as the
app's /var/run/dpdk (where EAL puts its config, multi-process and telemetry sockets), the hugepage
folder, and the EAL arguments the app should use. Cleanup removes that pod's runtime folder and its
hugepage files only.

EAL names hugepage files ``<prefix>map_<n>`` (``eal_filesystem.h``), so a prefix unique per pod is what
keeps one pod's cleanup away from another's memory.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from contract.pci import PciAddress
from vm_side.runtime_model import Mount

log = logging.getLogger(__name__)

CONTAINER_RUNTIME_DIR = "/var/run/dpdk"  # EAL's runtime folder when the app runs as root
CONTAINER_HUGEPAGE_DIR = "/dev/hugepages"
DEFAULT_HUGEPAGE_DIR = Path("/dev/hugepages")
TELEMETRY_SOCKET = "dpdk_telemetry.v2"
_UID_RE = re.compile(r"[A-Za-z0-9-]{1,64}")


class DpdkEnvError(Exception):
    """The pod's DPDK environment cannot be prepared or removed; the message names pod and path."""


@dataclass(frozen=True)
class DpdkPodEnv:
    pod_uid: str
    file_prefix: str
    runtime_dir: Path  # host side of the app's /var/run/dpdk
    hugepage_dir: Path
    eal_args: tuple[str, ...]

    @property
    def telemetry_socket(self) -> Path:
        """Host path of the app's telemetry socket (EAL: <runtime>/<prefix>/dpdk_telemetry.v2)."""
        return self.runtime_dir / self.file_prefix / TELEMETRY_SOCKET

    @property
    def mounts(self) -> tuple[Mount, ...]:
        return (
            Mount(CONTAINER_RUNTIME_DIR, str(self.runtime_dir), options=("rbind", "rw")),
            Mount(CONTAINER_HUGEPAGE_DIR, str(self.hugepage_dir), options=("rbind", "rw")),
        )

    @property
    def env(self) -> tuple[tuple[str, str], ...]:
        return (
            ("VFHOTPLUG_DPDK_FILE_PREFIX", self.file_prefix),
            ("VFHOTPLUG_DPDK_EAL_ARGS", " ".join(self.eal_args)),
        )


def file_prefix(pod_uid: str) -> str:
    """Short, fixed-length and unique per pod: it ends up in socket paths (107-byte limit)."""
    return "vfh" + hashlib.sha256(pod_uid.encode()).hexdigest()[:16]


def plan_dpdk_env(
    pod_uid: str, vfs: Sequence[PciAddress], runtime_root: Path, hugepage_dir: Path
) -> DpdkPodEnv:
    if not _UID_RE.fullmatch(pod_uid):
        raise DpdkEnvError(f"pod uid {pod_uid!r} is not 1-64 letters, digits or dashes")
    prefix = file_prefix(pod_uid)
    args = (f"--file-prefix={prefix}", f"--huge-dir={CONTAINER_HUGEPAGE_DIR}", *(f"--allow={v}" for v in vfs))
    return DpdkPodEnv(pod_uid, prefix, runtime_root / pod_uid, hugepage_dir, args)


def hugepage_files(hugepage_dir: Path, prefix: str) -> list[Path]:
    """The hugepage files EAL made for ``prefix`` (exact prefix: ``vfhab`` never matches ``vfhabc``)."""
    pattern = re.compile(re.escape(prefix) + r"map_\d+")
    if not hugepage_dir.is_dir():
        return []
    return sorted(p for p in hugepage_dir.iterdir() if pattern.fullmatch(p.name))


class DpdkEnvs:
    """Creates and removes per-pod DPDK environments under ``runtime_root``."""

    def __init__(self, runtime_root: Path, hugepage_dir: Path = DEFAULT_HUGEPAGE_DIR) -> None:
        self.runtime_root = runtime_root
        self.hugepage_dir = hugepage_dir

    def prepare(self, pod_uid: str, vfs: Sequence[PciAddress]) -> DpdkPodEnv:
        env = plan_dpdk_env(pod_uid, vfs, self.runtime_root, self.hugepage_dir)
        try:
            env.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise DpdkEnvError(
                f"pod {pod_uid}: cannot create DPDK runtime folder {env.runtime_dir}: {e}"
            ) from e
        log.info("pod %s: DPDK env prefix %s, runtime folder %s", pod_uid, env.file_prefix, env.runtime_dir)
        return env

    def cleanup(self, env: DpdkPodEnv) -> list[Path]:
        """Remove the pod's runtime folder and hugepage files; returns what was removed. Idempotent."""
        if env.runtime_dir.parent != self.runtime_root or env.file_prefix != file_prefix(env.pod_uid):
            raise DpdkEnvError(
                f"pod {env.pod_uid}: refusing to clean {env.runtime_dir} / prefix {env.file_prefix}: "
                f"not this pod's environment under {self.runtime_root}"
            )
        removed = hugepage_files(self.hugepage_dir, env.file_prefix)
        for p in removed:
            p.unlink(missing_ok=True)
        if env.runtime_dir.exists():
            shutil.rmtree(env.runtime_dir)
            removed.append(env.runtime_dir)
        log.info("pod %s: DPDK env removed (%d paths)", env.pod_uid, len(removed))
        return removed
