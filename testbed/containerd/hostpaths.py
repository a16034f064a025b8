"""What containerd (1.7 and 2.1 alike) writes outside its prefix, and removing one instance's share of it.

Several instances (and other test runs) may share these folders, so only what provably belongs to
the instance is removed, and shared folders are removed only once empty.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from .config import K8S_NAMESPACE

log = logging.getLogger(__name__)
_SHIM = "containerd-shim-runc-v2"
# The name CRI gives the loopback network it sets up in every pod netns.
_LOOPBACK_NETWORK = "cni-loopback"


class HostPaths:
    """The shared folders: shim sockets, the libcni cache and the pod cgroups."""

    def __init__(
        self,
        run_root: Path = Path("/run/containerd"),
        cni_root: Path = Path("/var/lib/cni"),
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        proc: Path = Path("/proc"),
    ) -> None:
        self._run_root = run_root
        self._cni_root = cni_root
        self._cgroup_root = cgroup_root
        self._proc = proc

    @property
    def run_root(self) -> Path:
        return self._run_root

    def shim_socket(self, address: Path, task_id: str, namespace: str = K8S_NAMESPACE) -> Path:
        """The shim socket of a task: containerd 1.7 hard-codes its folder and hashes the name from
        containerd's own address, the namespace and the task (sandbox) id."""
        digest = hashlib.sha256(os.path.join(str(address), namespace, task_id).encode()).hexdigest()
        return self._run_root / "s" / digest

    def shim_pids(self, address: Path) -> list[int]:
        """The runc shims serving the containerd listening on ``address``."""
        pids = []
        for entry in self._proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:  # the process exited while we looked
                continue
            if (
                argv
                and argv[0].endswith(_SHIM.encode())
                and _flag(argv, b"-address") == str(address).encode()
            ):
                pids.append(int(entry.name))
        return pids

    def clean(self, address: Path, task_ids: Iterable[str], cni_network: str) -> None:
        """Removes the instance's shim sockets, libcni cache entries and empty pod cgroups, then the
        shared folders that are left empty. Call only after the instance and its shims have exited."""
        ids = set(task_ids)
        for task_id in ids:
            _unlink(self.shim_socket(address, task_id))
        results = self._cni_root / "results"
        if results.is_dir():
            for entry in results.iterdir():
                ours = entry.name.startswith(f"{cni_network}-") or any(
                    entry.name.startswith(f"{_LOOPBACK_NETWORK}-{i}-") for i in ids
                )
                if ours:
                    _unlink(entry)
        _prune_empty(self._run_root)
        _prune_empty(self._cni_root)
        if self._cgroup_root.is_dir():
            for controller in self._cgroup_root.iterdir():
                # Pods without a cgroup parent get /<namespace>/<id> in every hierarchy.
                _prune_empty(controller / K8S_NAMESPACE)

    def leftovers(self, address: Path, task_ids: Iterable[str], cni_network: str) -> list[Path]:
        """What :meth:`clean` would remove for these tasks and still exists (for checks)."""
        found = [p for p in (self.shim_socket(address, i) for i in task_ids) if p.exists()]
        results = self._cni_root / "results"
        if results.is_dir():
            found += [e for e in results.iterdir() if e.name.startswith(f"{cni_network}-")]
        return found


def _flag(argv: list[bytes], name: bytes) -> bytes | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == name:
            return argv[i + 1]
    return None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
        log.info("removed leftover %s", path)
    except FileNotFoundError:
        pass


def _prune_empty(top: Path) -> None:
    """Removes empty folders bottom-up; rmdir refuses non-empty folders and busy cgroups, which
    belong to someone else and stay."""
    if not top.is_dir():
        return
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(Path(w[0]).parts)):
        try:
            os.rmdir(dirpath)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):
                raise
