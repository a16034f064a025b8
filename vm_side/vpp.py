"""Typed adapter over vpp-papi's ``VPPApiClient`` (socket transport): the only place that talks to VPP.

Every reply's ``retval`` is checked here (vpp_papi does not), with VPP's error names. The VF driver path is
chosen from VPP's message table at connect: the dev API (``dev_attach`` + ``dev_create_port_if``, driver
``iavf``, VPP >= 24.02) or native AVF (``avf_create``, VPP <= 25.10). Not thread-safe: one caller at a time.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.pci import PciAddress

log = logging.getLogger(__name__)

DEFAULT_SOCKET = Path("/run/vpp/api.sock")
DEFAULT_API_DIR = Path("/usr/share/vpp/api")
NO_INDEX = 0xFFFFFFFF  # VPP's ~0: "all" in dumps, "allocate one" for memif socket ids
_TAG_MAX = 63  # sw_interface_tag_add_del: string tag[64], NUL-terminated

# vnet/api_errno.h: the codes this adapter meets.
VPP_ERRORS: dict[int, str] = {
    -1: "UNSPECIFIED",
    -2: "INVALID_SW_IF_INDEX",
    -6: "NO_SUCH_ENTRY",
    -7: "INVALID_VALUE",
    -9: "UNIMPLEMENTED",
    -10: "INVALID_SW_IF_INDEX_2",
    -73: "INVALID_ARGUMENT",
    -74: "UNEXPECTED_INTF_STATE",
    -79: "IF_ALREADY_EXISTS",
    -81: "VALUE_EXIST",
    -165: "EAGAIN",  # cursor-style dumps: "call again"
}
# Codes meaning "the object is already gone": undo treats them as done.
GONE = frozenset({-2, -6})

# name_crc keys, as VPP lists them in the sockclnt_create reply (CRCs of VPP 25.10 / 26.06).
COMMON_MESSAGES = (
    "control_ping_51077d14",
    "show_version_51077d14",
    "sw_interface_dump_aa610c27",
    "sw_interface_set_flags_f5aec1b8",
    "sw_interface_tag_add_del_426f8bc1",
    "sw_interface_set_l2_xconnect_4fa28a85",
    "memif_socket_filename_add_del_v2_34223bdf",
    "memif_create_v2_8c7de5f7",
    "memif_delete_f9e6675e",
    "memif_dump_51077d14",
    "memif_socket_filename_dump_51077d14",
)
DEV_MESSAGES = (
    "dev_attach_44b725fc",
    "dev_create_port_if_dbdf06f3",
    "dev_remove_port_if_529cb13f",
    "dev_detach_afae52d6",
)
AVF_MESSAGES = ("avf_create_daab8ae2", "avf_delete_f9e6675e")


class VppError(Exception):
    """VPP refused or could not be reached; the message names the call and what to do."""


class VppUnavailable(VppError):
    """The API socket does not answer (VPP down or restarting)."""


class VppIncompatible(VppError):
    """VPP's message table lacks messages (or CRCs) this adapter needs."""


class VppCallFailed(VppError):
    def __init__(self, call: str, retval: int, detail: str = "") -> None:
        self.call = call
        self.retval = retval
        self.code = VPP_ERRORS.get(retval, "UNKNOWN")
        extra = f": {detail}" if detail else ""
        super().__init__(f"VPP {call} failed with {retval} ({self.code}){extra}")


class DriverPath(enum.Enum):
    DEV = "dev"  # dev_attach + dev_create_port_if, driver iavf
    AVF = "avf"  # avf_create


@dataclass(frozen=True)
class VfPort:
    """A VF handed to VPP: its interface, and the dev API device index (None on the AVF path)."""

    pci: PciAddress
    sw_if_index: int
    dev_index: int | None


@dataclass(frozen=True)
class Interface:
    sw_if_index: int
    name: str
    dev_type: str
    tag: str
    admin_up: bool
    link_up: bool


@dataclass(frozen=True)
class Memif:
    sw_if_index: int
    socket_id: int
    memif_id: int


@dataclass(frozen=True)
class MemifSocket:
    socket_id: int
    filename: str


def avf_pci_u32(pci: PciAddress) -> int:
    """The ``avf_create.pci_addr`` value: VPP reads it as ``vlib_pci_addr_t`` (u16 domain, u8 bus,
    u8 slot:5 function:3) over a host-order (x86) u32, e.g. 0000:3b:02.1 -> 0x223b0000."""
    return pci.domain | pci.bus << 16 | pci.slot << 24 | pci.function << 29


def choose_driver_path(table: frozenset[str]) -> DriverPath:
    """Pick the VF path VPP offers (dev API first: native AVF is gone from VPP 26.02).

    Raises:
        VppIncompatible: common messages missing, or neither driver message set complete.
    """
    if missing := [m for m in COMMON_MESSAGES if m not in table]:
        raise VppIncompatible(f"VPP lacks messages {missing}: install a VPP with memif and l2 (>= 24.02)")
    if all(m in table for m in DEV_MESSAGES):
        return DriverPath.DEV
    if all(m in table for m in AVF_MESSAGES):
        return DriverPath.AVF
    raise VppIncompatible(
        f"VPP offers no VF driver path: missing {[m for m in DEV_MESSAGES if m not in table]} (dev API, "
        f"VPP >= 24.02) and {[m for m in AVF_MESSAGES if m not in table]} (avf plugin, VPP <= 25.10); "
        "enable the dev_iavf or avf plugin"
    )


class Vpp:
    """VPP's binary API over its unix socket. ``api_dirs`` hold the ``*.api.json`` definitions (VPP
    installs them under /usr/share/vpp/api); None fetches them from VPP (``get_api_json``, >= 24.06)."""

    def __init__(
        self,
        socket_path: Path = DEFAULT_SOCKET,
        *,
        api_dirs: Sequence[Path] | None = (DEFAULT_API_DIR,),
        client_name: str = "vfhotplug",
        read_timeout: float = 5.0,
    ) -> None:
        self.socket_path = socket_path
        self._api_dirs = None if api_dirs is None else tuple(api_dirs)
        self._name = client_name
        self._timeout = read_timeout
        self._client: Any = None
        self._path: DriverPath | None = None

    # ---- connection ---------------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect and choose the driver path. Raises VppUnavailable or VppIncompatible."""
        if self._client is not None:
            return
        # Imported here: a plugin without a [vpp] table never connects, and must not pay vpp_papi's memory.
        from vpp_papi import VPPApiClient

        try:
            client = VPPApiClient(
                apidir=None if self._api_dirs is None else [str(d) for d in self._api_dirs],
                bootstrapapi=self._api_dirs is None,
                server_address=str(self.socket_path),
                read_timeout=self._timeout,
            )
        except (OSError, ValueError, RuntimeError) as e:
            raise VppIncompatible(f"cannot load VPP API definitions from {self._api_dirs}: {e}") from e
        try:
            client.connect(self._name)
        except OSError as e:
            raise VppUnavailable(
                f"VPP API socket {self.socket_path} does not answer ({e}): is VPP running?"
            ) from e
        table = frozenset(client.transport.message_table)
        try:
            path = choose_driver_path(table)
        except VppIncompatible:
            client.disconnect()
            raise
        self._client, self._path = client, path
        log.info("connected to VPP at %s, VF driver path %s", self.socket_path, path.value)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            except (OSError, AttributeError) as e:  # the socket may already be gone with VPP
                log.debug("disconnect from VPP: %s", e)

    def reconnect(self) -> None:
        self.close()
        self.connect()

    @property
    def driver_path(self) -> DriverPath:
        if self._path is None:
            raise VppUnavailable("not connected to VPP: call connect() first")
        return self._path

    def _call(self, name: str, *, tolerate: frozenset[int] = frozenset(), **kw: Any) -> Any:
        if self._client is None:
            raise VppUnavailable(f"not connected to VPP ({self.socket_path}) for {name}")
        try:
            rv = getattr(self._client.api, name)(**kw)
        except OSError as e:  # VPPIOError and socket errors: VPP went away under us
            self.close()
            raise VppUnavailable(f"VPP {name} got no answer on {self.socket_path}: {e}") from e
        if isinstance(rv, list):
            return rv
        if rv.retval != 0 and rv.retval not in tolerate:
            raise VppCallFailed(f"{name}({kw})", rv.retval, getattr(rv, "error_string", ""))
        return rv

    # ---- queries ------------------------------------------------------------------------------------

    def version(self) -> str:
        return str(self._call("show_version").version)

    def interfaces(self) -> tuple[Interface, ...]:
        return tuple(
            Interface(
                sw_if_index=d.sw_if_index,
                name=d.interface_name,
                dev_type=d.interface_dev_type,
                tag=d.tag,
                admin_up=bool(int(d.flags) & 1),
                link_up=bool(int(d.flags) & 2),
            )
            for d in self._call("sw_interface_dump", sw_if_index=NO_INDEX)
        )

    def memifs(self) -> tuple[Memif, ...]:
        return tuple(Memif(d.sw_if_index, d.socket_id, d.id) for d in self._call("memif_dump"))

    def memif_sockets(self) -> tuple[MemifSocket, ...]:
        return tuple(
            MemifSocket(d.socket_id, d.socket_filename) for d in self._call("memif_socket_filename_dump")
        )

    def cli(self, command: str) -> str:
        """``cli_inband`` (needs the vlib API); for read-only show commands."""
        return str(self._call("cli_inband", cmd=command).reply)

    # ---- VF ports -----------------------------------------------------------------------------------

    def attach_vf(self, pci: PciAddress) -> VfPort:
        """Hand a VF to VPP; VPP binds it to vfio-pci itself."""
        if self.driver_path is DriverPath.AVF:
            rv = self._call(
                "avf_create",
                pci_addr=avf_pci_u32(pci),
                enable_elog=0,
                rxq_num=1,
                rxq_size=1024,
                txq_size=1024,
            )
            return VfPort(pci, rv.sw_if_index, None)
        dev = self._call("dev_attach", device_id=f"pci/{pci}", driver_name="iavf", flags=0, args="")
        try:
            port = self._call(
                "dev_create_port_if",
                dev_index=dev.dev_index,
                intf_name="",
                num_rx_queues=0,  # 0: driver defaults
                num_tx_queues=0,
                rx_queue_size=0,
                tx_queue_size=0,
                port_id=0,
                flags=0,
                args="",
            )
        except VppError:
            self._call("dev_detach", dev_index=dev.dev_index, tolerate=GONE)
            raise
        return VfPort(pci, port.sw_if_index, dev.dev_index)

    def detach_vf(self, sw_if_index: int, dev_index: int | None) -> None:
        """Give a VF back (``dev_index`` None: AVF path); an already removed port or device counts as done."""
        if dev_index is None:
            self._call("avf_delete", sw_if_index=sw_if_index, tolerate=GONE)
            return
        self._call("dev_remove_port_if", sw_if_index=sw_if_index, tolerate=GONE)
        self._call("dev_detach", dev_index=dev_index, tolerate=GONE)

    # ---- memif --------------------------------------------------------------------------------------

    def add_memif_socket(self, path: Path) -> int:
        rv = self._call(
            "memif_socket_filename_add_del_v2", is_add=True, socket_id=NO_INDEX, socket_filename=str(path)
        )
        return int(rv.socket_id)

    def delete_memif_socket(self, socket_id: int) -> None:
        self._call("memif_socket_filename_add_del_v2", is_add=False, socket_id=socket_id, tolerate=GONE)

    def create_memif(self, socket_id: int, memif_id: int) -> int:
        """A memif in ethernet mode where VPP is the server (memif "master")."""
        rv = self._call(
            "memif_create_v2",
            role=0,
            mode=0,
            rx_queues=1,
            tx_queues=1,
            id=memif_id,
            socket_id=socket_id,
            ring_size=1024,
            buffer_size=2048,
        )
        return int(rv.sw_if_index)

    def delete_memif(self, sw_if_index: int) -> None:
        self._call("memif_delete", sw_if_index=sw_if_index, tolerate=GONE)

    # ---- interface settings -------------------------------------------------------------------------

    def set_tag(self, sw_if_index: int, tag: str) -> None:
        if len(tag.encode()) > _TAG_MAX:
            raise ValueError(f"VPP interface tag {tag!r} is over {_TAG_MAX} bytes")
        self._call("sw_interface_tag_add_del", is_add=True, sw_if_index=sw_if_index, tag=tag)

    def set_admin_up(self, sw_if_index: int, up: bool) -> None:
        self._call("sw_interface_set_flags", sw_if_index=sw_if_index, flags=1 if up else 0)

    def xconnect(self, rx_sw_if_index: int, tx_sw_if_index: int, *, enable: bool = True) -> None:
        """One direction of an l2 cross-connect (frames received on rx leave on tx)."""
        self._call(
            "sw_interface_set_l2_xconnect",
            rx_sw_if_index=rx_sw_if_index,
            tx_sw_if_index=tx_sw_if_index,
            enable=enable,
            tolerate=GONE if not enable else frozenset(),
        )
