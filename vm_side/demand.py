"""The pod's VF demand, parsed from the `vfhotplug.io/vfs` annotation (pure).

The annotation is either an integer (that many VFs of the default pool in the default mode) or a JSON list
of request objects. Every request is expanded into one `VfSlot` per VF, so later steps deal with single
VFs that each have their own interface name.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from contract.host_api import VfRequest
from vm_side.annotations import ANNOTATION as ANNOTATION  # re-exported: part of the contract

# Linux IFNAMSIZ is 16 including the terminating NUL.
_IFNAME_MAX = 15
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_POOL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_INT_RE = re.compile(r"[0-9]{1,9}")
_MTU_MIN, _MTU_MAX = 68, 9710  # 68: IPv4 minimum; 9710: the largest VF MTU of the NICs we target
_VLAN_MAX = 4094


class Mode(StrEnum):
    KERNEL = "kernel"  # the netdev moves into the pod's netns
    DPDK = "dpdk"  # bound to vfio-pci for a DPDK app in the pod
    VPP = "vpp"  # handed to the VM's VPP (the datapath step does the binding)


class DemandError(ValueError):
    """The annotation is wrong; the message names the annotation, the request index and the field."""

    def __init__(self, problem: str, index: int | None = None, field: str | None = None) -> None:
        where = ANNOTATION
        if index is not None:
            where += f" request {index}"
        if field is not None:
            where += f" field {field!r}"
        super().__init__(f"{where}: {problem}")
        self.index = index
        self.field = field


@dataclass(frozen=True)
class DemandDefaults:
    """The plugin config's part of demand parsing."""

    pool: str
    mode: Mode = Mode.KERNEL
    max_vfs_per_pod: int = 8
    mtu: int | None = None
    pools: frozenset[str] | None = None  # None: the host decides which pools exist


@dataclass(frozen=True)
class VfSlot:
    """One VF the pod asked for, with the request line it came from."""

    request_index: int
    pool: str
    mode: Mode
    ifname: str
    mac: str | None = None
    vlan: int | None = None
    trust: bool | None = None
    spoofchk: bool | None = None
    min_tx_rate_mbps: int = 0
    max_tx_rate_mbps: int = 0
    numa: int | None = None
    ip: str | None = None  # CIDR, e.g. "10.0.0.2/24"
    mtu: int | None = None


@dataclass(frozen=True)
class PodDemand:
    slots: tuple[VfSlot, ...]

    @property
    def modes(self) -> frozenset[Mode]:
        return frozenset(s.mode for s in self.slots)

    def host_requests(self) -> list[VfRequest]:
        """One host request per annotation request line; `GrantedVf.request_index` points back here."""
        lines: dict[int, list[VfSlot]] = {}
        for s in self.slots:
            lines.setdefault(s.request_index, []).append(s)
        out = []
        for _, group in sorted(lines.items()):
            s = group[0]
            out.append(
                VfRequest(
                    pool=s.pool,
                    count=len(group),
                    mac=s.mac,
                    vlan=s.vlan,
                    trust=s.trust,
                    spoofchk=s.spoofchk,
                    min_tx_rate_mbps=s.min_tx_rate_mbps,
                    max_tx_rate_mbps=s.max_tx_rate_mbps,
                    numa=s.numa,
                )
            )
        return out


KEYS = frozenset(
    {
        "pool",
        "count",
        "mode",
        "ifname",
        "mac",
        "vlan",
        "trust",
        "spoofchk",
        "min_tx_rate_mbps",
        "max_tx_rate_mbps",
        "numa",
        "ip",
        "mtu",
    }
)
# Keys that name one interface: they make no sense on a line asking for several VFs.
_SINGLE_VF_KEYS = ("ifname", "mac", "ip")


def parse_demand(annotations: Mapping[str, str], defaults: DemandDefaults) -> PodDemand | None:
    """The pod's demand, or None when the pod has no `vfhotplug.io/vfs` annotation.

    Raises:
        DemandError: the annotation is malformed or asks for something not allowed.
    """
    text = annotations.get(ANNOTATION)
    if text is None:
        return None
    if _INT_RE.fullmatch(text.strip()):
        count = int(text.strip())
        lines: list[Any] = [{"count": count}]
    else:
        lines = _load_list(text)
    slots: list[VfSlot] = []
    for index, raw in enumerate(lines):
        slots.extend(_parse_line(index, raw, defaults))
    if not slots:
        raise DemandError("asks for no VF; give a count >= 1 or remove the annotation")
    if len(slots) > defaults.max_vfs_per_pod:
        raise DemandError(
            f"asks for {len(slots)} VFs, over the per-pod limit of {defaults.max_vfs_per_pod}", field="count"
        )
    return PodDemand(_name_interfaces(slots))


def _load_list(text: str) -> list[Any]:
    def no_constants(name: str) -> Any:
        raise DemandError(f"{name} is not valid JSON")

    try:
        value = json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as e:
        raise DemandError(f"neither an integer nor valid JSON ({e.msg} at offset {e.pos})") from e
    except RecursionError as e:
        raise DemandError("JSON nested too deeply") from e
    if not isinstance(value, list):
        raise DemandError(f"expected an integer or a JSON list of requests, got JSON {type(value).__name__}")
    return value


def _parse_line(index: int, raw: Any, d: DemandDefaults) -> list[VfSlot]:
    if not isinstance(raw, dict):
        raise DemandError(f"expected a JSON object, got {type(raw).__name__}", index)
    if unknown := sorted(raw.keys() - KEYS):
        raise DemandError(f"unknown key; allowed: {', '.join(sorted(KEYS))}", index, unknown[0])

    def get(key: str, kind: type, default: Any = None) -> Any:
        value = raw.get(key)
        if value is None:  # JSON null reads as "not given"
            return default
        # bool is an int in Python, but `true` is not a count.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise DemandError(f"expected {kind.__name__}, got {type(value).__name__}", index, key)
        return value

    count = get("count", int, 1)
    if count <= 0 or count > d.max_vfs_per_pod:
        raise DemandError(f"{count} is not in 1..{d.max_vfs_per_pod} (the per-pod limit)", index, "count")
    for key in _SINGLE_VF_KEYS:
        if count > 1 and raw.get(key) is not None:
            raise DemandError(f"names one interface but count is {count}; use one request per VF", index, key)

    pool = get("pool", str, d.pool)
    if not _POOL_RE.fullmatch(pool):
        raise DemandError(f"{pool!r} is not a pool name (letters, digits, '_', '.', '-')", index, "pool")
    if d.pools is not None and pool not in d.pools:
        raise DemandError(f"unknown pool {pool!r}; configured: {', '.join(sorted(d.pools))}", index, "pool")
    mode_text = get("mode", str, d.mode.value)
    try:
        mode = Mode(mode_text)
    except ValueError as e:
        allowed = ", ".join(m.value for m in Mode)
        raise DemandError(f"unknown mode {mode_text!r}; use one of {allowed}", index, "mode") from e

    ifname = get("ifname", str)
    if ifname is not None and (not _IFNAME_RE.fullmatch(ifname) or ifname in (".", "..")):
        raise DemandError(
            f"{ifname!r} is not an interface name (1..{_IFNAME_MAX} of letters, digits, '_', '.', '-')",
            index,
            "ifname",
        )
    mac = get("mac", str)
    if mac is not None:
        mac = mac.lower()
        if not _MAC_RE.fullmatch(mac) or int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
            raise DemandError(f"{mac!r} is not a unicast MAC like 02:00:00:00:00:01", index, "mac")
    vlan = get("vlan", int)
    if vlan is not None and not 0 <= vlan <= _VLAN_MAX:
        raise DemandError(f"{vlan} is not a VLAN id in 0..{_VLAN_MAX}", index, "vlan")
    trust = get("trust", bool)
    spoofchk = get("spoofchk", bool)
    rates = []
    for key in ("min_tx_rate_mbps", "max_tx_rate_mbps"):
        rate = get(key, int, 0)
        if rate < 0:
            raise DemandError(f"{rate} is negative", index, key)
        rates.append(rate)
    if rates[1] and rates[0] > rates[1]:
        raise DemandError(f"{rates[0]} is above max_tx_rate_mbps {rates[1]}", index, "min_tx_rate_mbps")
    numa = get("numa", int)
    if numa is not None and numa < 0:
        raise DemandError(f"{numa} is not a NUMA node", index, "numa")
    ip = get("ip", str)
    if ip is not None:
        ip = _check_cidr(ip, index)
    mtu = get("mtu", int, d.mtu if mode is not Mode.DPDK else None)
    if mtu is not None and not _MTU_MIN <= mtu <= _MTU_MAX:
        raise DemandError(f"{mtu} is not an MTU in {_MTU_MIN}..{_MTU_MAX}", index, "mtu")
    if mode is Mode.DPDK:
        for key in ("ip", "mtu"):
            if raw.get(key) is not None:
                raise DemandError("has no meaning in dpdk mode (the DPDK app owns the port)", index, key)
    slot = VfSlot(
        request_index=index,
        pool=pool,
        mode=mode,
        ifname=ifname or "",
        mac=mac,
        vlan=vlan,
        trust=trust,
        spoofchk=spoofchk,
        min_tx_rate_mbps=rates[0],
        max_tx_rate_mbps=rates[1],
        numa=numa,
        ip=ip,
        mtu=mtu,
    )
    return [slot] * count


def _check_cidr(text: str, index: int) -> str:
    if "/" not in text:
        raise DemandError(f"{text!r} needs a prefix length, e.g. 10.0.0.2/24", index, "ip")
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError as e:
        raise DemandError(f"{text!r} is not an address in CIDR form ({e})", index, "ip") from e
    if iface.ip == iface.network.network_address and iface.network.num_addresses > 2:
        raise DemandError(f"{text!r} is the network address, not a host address", index, "ip")
    return str(iface)


def _name_interfaces(slots: list[VfSlot]) -> tuple[VfSlot, ...]:
    """Give every slot without an ifname the next free `netN`; refuse duplicate names."""
    seen: dict[str, int] = {}
    for s in slots:
        if s.ifname:
            if s.ifname in seen:
                raise DemandError(
                    f"{s.ifname!r} is already used by request {seen[s.ifname]}", s.request_index, "ifname"
                )
            seen[s.ifname] = s.request_index
    out = []
    n = 1
    for s in slots:
        if s.ifname:
            out.append(s)
            continue
        while f"net{n}" in seen:
            n += 1
        name = f"net{n}"
        seen[name] = s.request_index
        out.append(replace(s, ifname=name))
    return tuple(out)
