"""State of the VPP stand-in (FOR TESTS ONLY): devices, interfaces, memif sockets and interfaces,
l2 cross-connects and tags, with the VPP error codes (``vnet/api_errno.h``) VPP returns for duplicates and
unknown indexes. Which code VPP picks for a given handler is modelled on its sources, not measured."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INVALID_SW_IF_INDEX = -2
NO_SUCH_ENTRY = -6
INVALID_SW_IF_INDEX_2 = -10
INVALID_ARGUMENT = -73
UNEXPECTED_INTF_STATE = -74
IF_ALREADY_EXISTS = -79
VALUE_EXIST = -81

ADMIN_UP = 1
LINK_UP = 2
DEFAULT_MEMIF_SOCKET = "/run/vpp/memif.sock"  # VPP always has socket id 0 with this name


class StandinError(Exception):
    def __init__(self, retval: int, text: str) -> None:
        super().__init__(text)
        self.retval = retval


@dataclass
class Iface:
    sw_if_index: int
    name: str
    dev_type: str
    kind: str  # "local", "avf", "dev", "memif"
    flags: int = 0
    tag: str = ""
    pci: str = ""
    dev_index: int | None = None
    memif: tuple[int, int] | None = None  # (socket_id, memif id)


@dataclass
class VppModel:
    interfaces: dict[int, Iface] = field(default_factory=lambda: {0: Iface(0, "local0", "local", "local")})
    devices: dict[int, str] = field(default_factory=dict)  # dev_index -> device id ("pci/0000:3b:02.1")
    memif_sockets: dict[int, str] = field(default_factory=lambda: {0: DEFAULT_MEMIF_SOCKET})
    xconnects: dict[int, int] = field(default_factory=dict)  # rx sw_if_index -> tx sw_if_index
    buffers_used: int = 50
    buffers_total: int = 16800
    _listeners: dict[int, socket.socket] = field(default_factory=dict)
    _next_if: int = 1
    _next_dev: int = 0

    # ---- helpers ------------------------------------------------------------------------------------

    def _iface(self, sw_if_index: int, code: int = INVALID_SW_IF_INDEX) -> Iface:
        if sw_if_index not in self.interfaces:
            raise StandinError(code, f"invalid sw_if_index {sw_if_index}")
        return self.interfaces[sw_if_index]

    def _add(self, **kw: Any) -> Iface:
        iface = Iface(self._next_if, **kw)
        self.interfaces[iface.sw_if_index] = iface
        self._next_if += 1
        return iface

    def _remove(self, sw_if_index: int) -> None:
        del self.interfaces[sw_if_index]
        # VPP puts a deleted interface back into L3 mode; a peer's xconnect towards it stays configured.
        self.xconnects.pop(sw_if_index, None)

    def _remove_of_kind(self, sw_if_index: int, kind: str, what: str) -> dict[str, Any]:
        """The delete call of one kind: VPP refuses an interface another call created."""
        iface = self._iface(sw_if_index)
        if iface.kind != kind:
            raise StandinError(INVALID_SW_IF_INDEX, f"{iface.name} is not {what}")
        self._remove(iface.sw_if_index)
        return {"retval": 0}

    def crash(self) -> None:
        """The process dies: listening memif sockets close, their files stay on disk."""
        for lsn in self._listeners.values():
            lsn.close()
        self._listeners.clear()

    # ---- vpe / vlib ---------------------------------------------------------------------------------

    def show_version(self, req: Any) -> dict[str, Any]:
        return {
            "retval": 0,
            "program": "vpe",
            "version": "26.02-standin",
            "build_date": "",
            "build_directory": "",
        }

    def cli_inband(self, req: Any) -> dict[str, Any]:
        if req.cmd.strip() != "show buffers":
            return {"retval": 0, "reply": f"unknown input `{req.cmd}'\n"}
        cached = 200
        avail = self.buffers_total - self.buffers_used - cached
        reply = (
            "Pool Name            Index NUMA  Size  Data Size  Total  Avail  Cached   Used  \n"
            f"default-numa-0         0     0   2496     2048   {self.buffers_total:>6} {avail:>6} "
            f"{cached:>6} {self.buffers_used:>6}  \n"
        )
        return {"retval": 0, "reply": reply}

    # ---- interface ----------------------------------------------------------------------------------

    def sw_interface_dump(self, req: Any) -> list[dict[str, Any]]:
        wanted = req.sw_if_index
        return [
            {
                "sw_if_index": i.sw_if_index,
                "sup_sw_if_index": i.sw_if_index,
                "flags": i.flags,
                "link_mtu": 9000,
                "mtu": [9000, 0, 0, 0],
                "interface_name": i.name,
                "interface_dev_type": i.dev_type,
                "tag": i.tag,
            }
            for i in sorted(self.interfaces.values(), key=lambda i: i.sw_if_index)
            if wanted in (0xFFFFFFFF, i.sw_if_index)
        ]

    def sw_interface_set_flags(self, req: Any) -> dict[str, Any]:
        iface = self._iface(req.sw_if_index)
        up = bool(int(req.flags) & ADMIN_UP)
        # A VF port's link follows admin state here; a memif's link needs a connected peer.
        link = LINK_UP if up and iface.kind in ("avf", "dev") else 0
        iface.flags = (ADMIN_UP if up else 0) | link
        return {"retval": 0}

    def sw_interface_tag_add_del(self, req: Any) -> dict[str, Any]:
        iface = self._iface(req.sw_if_index)
        iface.tag = req.tag if req.is_add else ""
        return {"retval": 0}

    def want_interface_events(self, req: Any) -> dict[str, Any]:
        return {"retval": 0}

    # ---- l2 -----------------------------------------------------------------------------------------

    def sw_interface_set_l2_xconnect(self, req: Any) -> dict[str, Any]:
        self._iface(req.rx_sw_if_index)
        if req.enable:
            self._iface(req.tx_sw_if_index, INVALID_SW_IF_INDEX_2)
            self.xconnects[req.rx_sw_if_index] = req.tx_sw_if_index
        else:
            self.xconnects.pop(req.rx_sw_if_index, None)
        return {"retval": 0}

    # ---- avf ----------------------------------------------------------------------------------------

    def avf_create(self, req: Any) -> dict[str, Any]:
        # vlib_pci_addr_t over a host-order u32: domain | bus << 16 | slot << 24 | function << 29.
        a = req.pci_addr
        pci = f"{a & 0xFFFF:04x}:{(a >> 16) & 0xFF:02x}:{(a >> 24) & 0x1F:02x}.{(a >> 29) & 0x7:x}"
        if any(i.pci == pci for i in self.interfaces.values()):
            raise StandinError(IF_ALREADY_EXISTS, f"{pci} already in use")
        name = f"avf-{a & 0xFFFF:x}/{(a >> 16) & 0xFF:x}/{(a >> 24) & 0x1F:x}/{(a >> 29) & 0x7:x}"
        iface = self._add(name=name, dev_type="AVF interface", kind="avf", pci=pci)
        return {"retval": 0, "sw_if_index": iface.sw_if_index}

    def avf_delete(self, req: Any) -> dict[str, Any]:
        return self._remove_of_kind(req.sw_if_index, "avf", "an avf interface")

    # ---- dev ----------------------------------------------------------------------------------------

    def dev_attach(self, req: Any) -> dict[str, Any]:
        if req.device_id in self.devices.values():
            raise StandinError(VALUE_EXIST, f"device {req.device_id} already attached")
        if not req.device_id.startswith("pci/") or req.driver_name != "iavf":
            raise StandinError(INVALID_ARGUMENT, f"bad device {req.device_id!r} / driver {req.driver_name!r}")
        idx = self._next_dev
        self._next_dev += 1
        self.devices[idx] = req.device_id
        return {"retval": 0, "dev_index": idx}

    def dev_create_port_if(self, req: Any) -> dict[str, Any]:
        if req.dev_index not in self.devices:
            raise StandinError(NO_SUCH_ENTRY, f"no device {req.dev_index}")
        if any(i.dev_index == req.dev_index for i in self.interfaces.values()):
            raise StandinError(VALUE_EXIST, f"device {req.dev_index} port {req.port_id} exists")
        name = req.intf_name or f"eth{req.dev_index}"
        pci = self.devices[req.dev_index].removeprefix("pci/")
        iface = self._add(name=name, dev_type="iavf", kind="dev", pci=pci, dev_index=req.dev_index)
        return {"retval": 0, "sw_if_index": iface.sw_if_index}

    def dev_remove_port_if(self, req: Any) -> dict[str, Any]:
        return self._remove_of_kind(req.sw_if_index, "dev", "a device port")

    def dev_detach(self, req: Any) -> dict[str, Any]:
        if req.dev_index not in self.devices:
            raise StandinError(NO_SUCH_ENTRY, f"no device {req.dev_index}")
        for i in [i for i in self.interfaces.values() if i.dev_index == req.dev_index]:
            self._remove(i.sw_if_index)
        del self.devices[req.dev_index]
        return {"retval": 0}

    # ---- memif --------------------------------------------------------------------------------------

    def memif_socket_filename_add_del_v2(self, req: Any) -> dict[str, Any]:
        if req.is_add:
            if req.socket_filename in self.memif_sockets.values():
                raise StandinError(VALUE_EXIST, f"socket {req.socket_filename} exists")
            sid = req.socket_id
            if sid == 0xFFFFFFFF:
                sid = max(self.memif_sockets) + 1
            elif sid in self.memif_sockets:
                raise StandinError(VALUE_EXIST, f"socket id {sid} exists")
            self.memif_sockets[sid] = req.socket_filename
            return {"retval": 0, "socket_id": sid}
        if req.socket_id not in self.memif_sockets or req.socket_id == 0:
            raise StandinError(NO_SUCH_ENTRY, f"no socket id {req.socket_id}")
        if any(i.memif and i.memif[0] == req.socket_id for i in self.interfaces.values()):
            raise StandinError(UNEXPECTED_INTF_STATE, f"socket id {req.socket_id} in use")
        del self.memif_sockets[req.socket_id]
        return {"retval": 0, "socket_id": req.socket_id}

    def memif_create_v2(self, req: Any) -> dict[str, Any]:
        if req.socket_id not in self.memif_sockets:
            raise StandinError(INVALID_ARGUMENT, f"no socket id {req.socket_id}")
        if any(i.memif == (req.socket_id, req.id) for i in self.interfaces.values()):
            raise StandinError(IF_ALREADY_EXISTS, f"memif id {req.id} exists on socket {req.socket_id}")
        if int(req.role) == 0 and req.socket_id not in self._listeners:
            # VPP listens on the socket file once the first server (master) interface uses it.
            path = Path(self.memif_sockets[req.socket_id])
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # like VPP's clib_socket_init: a stale file from a crash is replaced
            lsn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            lsn.bind(str(path))
            lsn.listen(4)
            self._listeners[req.socket_id] = lsn
        name = f"memif{req.socket_id}/{req.id}"
        iface = self._add(name=name, dev_type="memif", kind="memif", memif=(req.socket_id, req.id))
        return {"retval": 0, "sw_if_index": iface.sw_if_index}

    def memif_delete(self, req: Any) -> dict[str, Any]:
        iface = self._iface(req.sw_if_index)
        if iface.memif is None:
            raise StandinError(INVALID_SW_IF_INDEX, f"{iface.name} is not a memif")
        self._remove(iface.sw_if_index)
        sid = iface.memif[0]
        if not any(i.memif and i.memif[0] == sid for i in self.interfaces.values()):
            lsn = self._listeners.pop(sid, None)
            if lsn is not None:
                lsn.close()
                with contextlib.suppress(FileNotFoundError):
                    Path(self.memif_sockets[sid]).unlink()
        return {"retval": 0}

    def memif_dump(self, req: Any) -> list[dict[str, Any]]:
        return [
            {
                "sw_if_index": i.sw_if_index,
                "id": i.memif[1],
                "socket_id": i.memif[0],
                "role": 0,
                "mode": 0,
                "ring_size": 1024,
                "buffer_size": 2048,
                "flags": i.flags,
                "if_name": i.name,
            }
            for i in self.interfaces.values()
            if i.memif is not None
        ]

    def memif_socket_filename_dump(self, req: Any) -> list[dict[str, Any]]:
        return [{"socket_id": s, "socket_filename": f} for s, f in sorted(self.memif_sockets.items())]
