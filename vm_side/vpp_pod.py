"""Per-pod programming of VPP in ``vpp`` mode: each VF goes to VPP, each gets a memif on the pod's own
memif socket (VPP is the server), and the two are l2 cross-connected both ways.

Why a cross-connect and not a bridge domain: each VF pairs with exactly one memif, so the traffic is
point-to-point; a bridge domain would add MAC learning and flooding for nothing. A bridge domain is the
answer only when one VF serves several memifs, which this mode does not offer.

Every VPP object carries a tag naming the pod (``vfh:<pod uid>:vf<n>[:d<dev index>]`` /
``vfh:<pod uid>:memif<n>``), so undo and reconcile find a pod's objects by tag, never by an index that a
VPP restart may have handed to someone else. The memif socket is found by its file name, which holds the
pod uid.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.pci import PciAddress
from vm_side.runtime_model import Mount
from vm_side.vpp import Interface, MemifSocket, Vpp, VppError, VppUnavailable

log = logging.getLogger(__name__)

CONTAINER_MEMIF_DIR = "/run/vfhotplug/memif"
SOCKET_NAME = "memif.sock"
_TAG_RE = re.compile(r"vfh:([A-Za-z0-9-]{1,40}):(vf|memif)(\d+)(?::d(\d+))?")
_UID_RE = re.compile(r"[A-Za-z0-9-]{1,40}")
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the NUL


class VppPodError(VppError):
    """Programming a pod failed; what was done has been undone (or is left for reconcile, as said)."""

    def __init__(self, pod_uid: str, message: str) -> None:
        self.pod_uid = pod_uid
        super().__init__(f"pod {pod_uid}: {message}")


@dataclass(frozen=True)
class PodPort:
    pci: str
    vf_sw_if_index: int
    dev_index: int | None  # None on VPP's AVF path
    memif_id: int
    memif_sw_if_index: int


@dataclass(frozen=True)
class VppPodRecord:
    """What VPP holds for one pod: enough to undo it, and to re-create it after a VPP restart."""

    pod_uid: str
    socket_path: str
    socket_id: int
    ports: tuple[PodPort, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pod_uid": self.pod_uid,
            "socket_path": self.socket_path,
            "socket_id": self.socket_id,
            "ports": [vars(p) for p in self.ports],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VppPodRecord:
        return cls(d["pod_uid"], d["socket_path"], d["socket_id"], tuple(PodPort(**p) for p in d["ports"]))


@dataclass(frozen=True)
class Tag:
    pod_uid: str
    kind: str  # "vf" or "memif"
    index: int
    dev_index: int | None = None

    def __str__(self) -> str:
        dev = f":d{self.dev_index}" if self.dev_index is not None else ""
        return f"vfh:{self.pod_uid}:{self.kind}{self.index}{dev}"


def parse_tag(text: str) -> Tag | None:
    """Our tag on a VPP interface, or None for anyone else's."""
    m = _TAG_RE.fullmatch(text)
    if m is None:
        return None
    return Tag(m[1], m[2], int(m[3]), int(m[4]) if m[4] is not None else None)


@dataclass(frozen=True)
class MemifWiring:
    """What the pod's containers get: the memif socket folder mounted, and env naming the socket and ids."""

    mounts: tuple[Mount, ...]
    env: tuple[tuple[str, str], ...]


def pod_socket_dir(memif_dir: Path, pod_uid: str) -> Path:
    if not _UID_RE.fullmatch(pod_uid):
        raise ValueError(f"pod uid {pod_uid!r} is not 1-40 letters, digits or dashes")
    return memif_dir / pod_uid


def memif_wiring(memif_dir: Path, pod_uid: str, count: int) -> MemifWiring:
    """Mount and env for a pod with ``count`` memifs (ids 0..count-1) on its socket.

    The folder, not the socket file, is mounted: VPP re-creates the file after a restart, and a bind
    mount of the old file would keep pointing at the dead inode.
    """
    sock = f"{CONTAINER_MEMIF_DIR}/{SOCKET_NAME}"
    ids = list(range(count))
    vdevs = " ".join(f"net_memif{i},role=client,id={i},socket={sock},socket-abstract=no" for i in ids)
    return MemifWiring(
        mounts=(
            Mount(CONTAINER_MEMIF_DIR, str(pod_socket_dir(memif_dir, pod_uid)), options=("rbind", "rw")),
        ),
        env=(
            ("VFHOTPLUG_MEMIF_SOCKET", sock),
            ("VFHOTPLUG_MEMIF_IDS", ",".join(map(str, ids))),
            ("VFHOTPLUG_MEMIF_ROLE", "client"),
            # DPDK apps: one --vdev per entry (DPDK's memif defaults to an abstract socket; VPP's is a file).
            ("VFHOTPLUG_MEMIF_DPDK_VDEVS", vdevs),
        ),
    )


def _intact(rec: VppPodRecord, ifaces: Mapping[int, Interface], sockets: Iterable[MemifSocket]) -> bool:
    if MemifSocket(rec.socket_id, rec.socket_path) not in set(sockets):
        return False
    for n, p in enumerate(rec.ports):
        vf, mif = ifaces.get(p.vf_sw_if_index), ifaces.get(p.memif_sw_if_index)
        if vf is None or mif is None or not (vf.admin_up and mif.admin_up):
            return False
        if vf.tag != str(Tag(rec.pod_uid, "vf", n, p.dev_index)) or mif.tag != str(
            Tag(rec.pod_uid, "memif", n)
        ):
            return False
    return True


class VppPods:
    """Programs, undoes and reconciles pods' VPP objects through one ``Vpp`` adapter."""

    def __init__(self, vpp: Vpp, memif_dir: Path) -> None:
        self.vpp = vpp
        self.memif_dir = memif_dir

    def program(
        self, pod_uid: str, vfs: Sequence[PciAddress], progress: Callable[[str], None] | None = None
    ) -> VppPodRecord:
        """Attach the VFs, create the pod's memif socket and memifs, cross-connect, set up, tag.
        ``progress`` hears "vpp attach" once the first VF is VPP's (tests crash the plugin there).

        Raises:
            VppPodError: anything failed; what was done is undone first.
        """
        sock_dir = pod_socket_dir(self.memif_dir, pod_uid)
        sock_path = sock_dir / SOCKET_NAME
        if len(str(sock_path).encode()) > _SUN_PATH_MAX:
            raise VppPodError(pod_uid, f"memif socket path {sock_path} is too long for a unix socket")
        if not vfs:
            raise VppPodError(pod_uid, "no VFs to hand to VPP")
        try:
            self.vpp.connect()
        except VppError as e:
            raise VppPodError(pod_uid, f"cannot program VPP: {e}") from e
        done = _Progress()
        step = "memif socket"
        try:
            sock_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                sock_path.unlink()  # stale from a VPP that died; this path is the pod's alone
            done.socket_id = self.vpp.add_memif_socket(sock_path)
            for n, pci in enumerate(vfs):
                step = f"VF {pci}"
                port = self.vpp.attach_vf(pci)
                done.vfs.append((port.sw_if_index, port.dev_index))
                self.vpp.set_tag(port.sw_if_index, str(Tag(pod_uid, "vf", n, port.dev_index)))
                if progress is not None and n == 0:
                    progress("vpp attach")
                step = f"memif {n} for VF {pci}"
                mif = self.vpp.create_memif(done.socket_id, n)
                done.memifs.append(mif)
                self.vpp.set_tag(mif, str(Tag(pod_uid, "memif", n)))
                self.vpp.xconnect(port.sw_if_index, mif)
                self.vpp.xconnect(mif, port.sw_if_index)
                self.vpp.set_admin_up(port.sw_if_index, True)
                self.vpp.set_admin_up(mif, True)
                done.ports.append(PodPort(str(pci), port.sw_if_index, port.dev_index, n, mif))
        except (VppError, OSError) as e:
            left = self._rollback(pod_uid, done, sock_dir)
            raise VppPodError(pod_uid, f"{step}: {e}; {left}") from e
        assert done.socket_id is not None
        rec = VppPodRecord(pod_uid, str(sock_path), done.socket_id, tuple(done.ports))
        log.info("pod %s: VPP holds %d VF(s) cross-connected to memifs on %s", pod_uid, len(vfs), sock_path)
        return rec

    def undo(self, record: VppPodRecord) -> None:
        """Remove everything VPP holds for the pod, and its socket folder. Idempotent.

        Raises:
            VppUnavailable: VPP is down; call again (or reconcile) when it is back.
        """
        self.remove(record.pod_uid)

    def remove(self, pod_uid: str) -> None:
        """`undo` by pod uid: the tags and the socket file name find the objects. Idempotent.

        Raises:
            VppUnavailable: VPP is down; call again (or reconcile) when it is back.
        """
        self.vpp.connect()
        self._remove_pod(pod_uid)
        log.info("pod %s: VPP objects and memif socket removed", pod_uid)

    def reconcile(self, records: Iterable[VppPodRecord]) -> tuple[VppPodRecord, ...]:
        """Make VPP hold exactly the live pods' objects: remove orphans (tags or sockets of pods with no
        record), re-create pods whose objects are missing (VPP restarted). Returns the current records
        (re-created pods get new indexes).

        Raises:
            VppUnavailable: VPP does not answer even after a reconnect; call again later.
            VppPodError: re-creating a pod failed (that pod's partial objects are undone).
        """
        live = {r.pod_uid: r for r in records}
        try:
            self.vpp.connect()
            self.vpp.version()
        except VppUnavailable:
            self.vpp.reconnect()  # VPP restarted: the old connection is dead
        found, sockets = self.vpp.interfaces(), self.vpp.memif_sockets()
        orphans = {t.pod_uid for i in found if (t := parse_tag(i.tag)) is not None} - live.keys()
        for uid in sorted(orphans):
            log.warning("pod %s: no record, removing its leftover VPP objects", uid)
            self._remove_pod(uid)
        stale = [
            s
            for s in sockets
            if (owner := self._socket_owner(s.filename)) is not None and owner not in live.keys() | orphans
        ]
        for s in stale:
            self.vpp.delete_memif_socket(s.socket_id)
        if self.memif_dir.is_dir():
            for d in self.memif_dir.iterdir():
                if d.is_dir() and d.name not in live:
                    shutil.rmtree(d, ignore_errors=True)
        if orphans or stale:  # the steady state (nothing removed) costs one dump of each
            found, sockets = self.vpp.interfaces(), self.vpp.memif_sockets()
        ifaces = {i.sw_if_index: i for i in found}
        out = []
        for rec in live.values():
            if _intact(rec, ifaces, sockets) and Path(rec.socket_path).exists():
                out.append(rec)
                continue
            log.warning("pod %s: VPP lost its objects (restart?), re-creating them", rec.pod_uid)
            self._remove_pod(rec.pod_uid)
            out.append(self.program(rec.pod_uid, [PciAddress.parse(p.pci) for p in rec.ports]))
        return tuple(out)

    # ---- internals ----------------------------------------------------------------------------------

    def _socket_owner(self, filename: str) -> str | None:
        path = Path(filename)
        if path.name == SOCKET_NAME and path.parent.parent == self.memif_dir:
            return path.parent.name
        return None

    def _remove_pod(self, pod_uid: str) -> None:
        vfs: dict[int, tuple[int, int | None]] = {}
        memifs: dict[int, int] = {}
        for i in self.vpp.interfaces():
            t = parse_tag(i.tag)
            if t is None or t.pod_uid != pod_uid:
                continue
            if t.kind == "vf":
                vfs[t.index] = (i.sw_if_index, t.dev_index)
            else:
                memifs[t.index] = i.sw_if_index
        for n, mif in sorted(memifs.items(), reverse=True):
            if n in vfs:
                self.vpp.xconnect(vfs[n][0], mif, enable=False)
                self.vpp.xconnect(mif, vfs[n][0], enable=False)
            self.vpp.delete_memif(mif)
        for _, (sw, dev) in sorted(vfs.items(), reverse=True):
            self.vpp.detach_vf(sw, dev)
        for s in self.vpp.memif_sockets():
            if self._socket_owner(s.filename) == pod_uid:
                self.vpp.delete_memif_socket(s.socket_id)
        shutil.rmtree(pod_socket_dir(self.memif_dir, pod_uid), ignore_errors=True)

    def _rollback(self, pod_uid: str, done: _Progress, sock_dir: Path) -> str:
        """Undo a half-programmed pod by the indexes just returned (same VPP session, so they are ours)."""
        try:
            for mif, (sw, _) in zip(
                reversed(done.memifs), reversed(done.vfs[: len(done.memifs)]), strict=True
            ):
                self.vpp.xconnect(sw, mif, enable=False)
                self.vpp.xconnect(mif, sw, enable=False)
                self.vpp.delete_memif(mif)
            for sw, dev in reversed(done.vfs):
                self.vpp.detach_vf(sw, dev)
            if done.socket_id is not None:
                self.vpp.delete_memif_socket(done.socket_id)
        except VppError as e:
            log.error("pod %s: rollback incomplete: %s", pod_uid, e)
            return f"rollback incomplete ({e}); reconcile removes the rest once VPP answers"
        finally:
            shutil.rmtree(sock_dir, ignore_errors=True)
        return "everything done so far was undone"


class _Progress:
    """What program() has created so far, in order."""

    def __init__(self) -> None:
        self.socket_id: int | None = None
        self.vfs: list[tuple[int, int | None]] = []
        self.memifs: list[int] = []
        self.ports: list[PodPort] = []
