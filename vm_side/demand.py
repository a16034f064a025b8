"""The pod's VF demand, parsed from the `vfhotplug.io/vfs` annotation (pure).

The annotation is either an integer (that many VFs of the default pool in the default mode) or a JSON list
of request objects. Every request is expanded into one `VfSlot` per VF, so later steps deal with single
VFs that each have their own interface name.
"""

from __future__ import annotations

import difflib
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
_INT_RE = re.compile(r"-?[0-9]+")
_INT_DIGITS_MAX = 30
MTU_MIN, MTU_MAX = 68, 9710  # 68: IPv4 minimum; 9710: the largest VF MTU of the NICs we target
_VLAN_MAX = 4094
_NUMA_MAX = 1023  # Linux builds with at most 1024 NUMA nodes (NODES_SHIFT 10)
_RATE_MAX = 1_000_000  # 1 Tbit/s, above any NIC; also keeps rates within the API's uint32
_RATE_KEYS = ("min_tx_rate_mbps", "max_tx_rate_mbps")


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
# Keys that shape the netdev in the pod; in the other modes someone else owns the port.
_KERNEL_ONLY_KEYS = ("ip", "mtu")
_PORT_OWNER = {"dpdk": "the DPDK app", "vpp": "the VM's VPP"}
_WHAT = {int: "an integer", str: "a string", bool: "true or false"}


def parse_demand(
    annotations: Mapping[str, str], defaults: DemandDefaults, taken_ifnames: frozenset[str] = frozenset()
) -> PodDemand | None:
    """The pod's demand, or None when the pod has no `vfhotplug.io/vfs` annotation.

    `taken_ifnames` are the names already in the pod's netns: a kernel-mode request naming one is refused
    (the move into the pod would fail after the host call), generated names skip them.

    Raises:
        DemandError: the annotation is malformed or asks for something not allowed.
    """
    text = annotations.get(ANNOTATION)
    if text is None:
        return None
    if _INT_RE.fullmatch(text.strip()):
        lines: list[Any] = [{"count": _json_int(text.strip())}]
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
    return PodDemand(_name_interfaces(slots, taken_ifnames))


class _JsonObject(dict[str, Any]):
    """A JSON object that remembers the keys given more than once (json.loads keeps the last silently)."""

    repeated: tuple[str, ...] = ()


def _json_object(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject(pairs)
    if len(obj) != len(pairs):
        keys = [k for k, _ in pairs]
        obj.repeated = tuple(sorted({k for k in keys if keys.count(k) > 1}))
    return obj


def _json_int(text: str) -> int:
    # Python refuses to convert over 4300 digits with a bare ValueError; no field takes a tenth of that.
    digits = len(text.lstrip("-"))
    if digits > _INT_DIGITS_MAX:
        raise DemandError(f"an integer of {digits} digits is out of range of every field")
    return int(text)


def _load_list(text: str) -> list[Any]:
    def no_constants(name: str) -> Any:
        raise DemandError(f"{name} is not valid JSON")

    try:
        value = json.loads(
            text, parse_constant=no_constants, parse_int=_json_int, object_pairs_hook=_json_object
        )
    except json.JSONDecodeError as e:
        raise DemandError(f"neither an integer nor valid JSON ({e.msg} at offset {e.pos})") from e
    except RecursionError as e:
        raise DemandError("JSON nested too deeply") from e
    if isinstance(value, dict):
        raise DemandError('got one JSON object; give a list of requests, e.g. [{"count": 2}]')
    if not isinstance(value, list):
        raise DemandError(f"expected an integer or a JSON list of requests, got {_describe(value)}")
    return value


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, as the user wrote it."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}
    return "null" if value is None else next(n for t, n in names.items() if isinstance(value, t))


def _describe(value: Any) -> str:
    """A parsed JSON value as the user wrote it, with its type: `string "2"`, `boolean true`, `null`."""
    text = json.dumps(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return "null" if value is None else f"{_json_type(value)} {text}"


class _Line:
    """One request object, read key by key; every error names the request index and the key."""

    def __init__(self, index: int, raw: Mapping[str, Any]) -> None:
        self.index, self.raw = index, raw

    def error(self, key: str, problem: str) -> DemandError:
        return DemandError(problem, self.index, key)

    def get(self, key: str, kind: type, default: Any = None) -> Any:
        value = self.raw.get(key)
        if value is None:  # JSON null reads as "not given"
            return default
        # bool is an int in Python, but `true` is not a count.
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        hint = ""
        if kind is int and isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,12}", value.strip()):
            hint = f"; write {value.strip()} without quotes"
        elif kind is bool and value in ("true", "false"):
            hint = f"; write {value} without quotes"
        elif kind is int and isinstance(value, float) and value.is_integer() and abs(value) < 1e12:
            hint = f"; write {int(value)}"
        raise self.error(key, f"expected {_WHAT[kind]}, got {_describe(value)}{hint}")

    def bounded(self, key: str, lo: int, hi: int, what: str, default: Any = None) -> Any:
        value = self.get(key, int, default)
        if value is not None and value < lo:
            sign = "negative" if value < 0 else f"below {lo}"
            raise self.error(key, f"{value} is {sign}; {what} is in {lo}..{hi}")
        if value is not None and value > hi:
            raise self.error(key, f"{value} is above {hi}; {what} is in {lo}..{hi}")
        return value


def _parse_line(index: int, raw: Any, d: DemandDefaults) -> list[VfSlot]:
    if not isinstance(raw, dict):
        raise DemandError(f'expected a JSON object like {{"count": 1}}, got {_describe(raw)}', index)
    if unknown := sorted(raw.keys() - KEYS):
        near = difflib.get_close_matches(unknown[0], KEYS, n=1)
        guess = f"did you mean {near[0]!r}? " if near else ""
        raise DemandError(f"unknown key; {guess}allowed: {', '.join(sorted(KEYS))}", index, unknown[0])
    if isinstance(raw, _JsonObject) and raw.repeated:
        raise DemandError(
            "is given twice; JSON would keep only the last value, so give each key once",
            index,
            raw.repeated[0],
        )
    line = _Line(index, raw)
    count = _count(line, d.max_vfs_per_pod)
    for key in _SINGLE_VF_KEYS:
        if count > 1 and raw.get(key) is not None:
            raise line.error(key, f"names one interface but count is {count}; use one request per VF")
    pool = line.get("pool", str, d.pool)
    if not _POOL_RE.fullmatch(pool):
        raise line.error("pool", f"{pool!r} is not a pool name (letters, digits, '_', '.', '-')")
    if d.pools is not None and pool not in d.pools:
        raise line.error("pool", f"unknown pool {pool!r}; configured: {', '.join(sorted(d.pools))}")
    mode_text = line.get("mode", str, d.mode.value)
    try:
        mode = Mode(mode_text)
    except ValueError as e:
        allowed = ", ".join(m.value for m in Mode)
        raise line.error("mode", f"unknown mode {mode_text!r}; use one of {allowed}") from e
    if mode is not Mode.KERNEL:
        for key in _KERNEL_ONLY_KEYS:
            if raw.get(key) is not None:
                raise line.error(key, f"is for kernel mode; in {mode} mode {_PORT_OWNER[mode]} owns the port")
    ip = line.get("ip", str)
    mtu_default = d.mtu if mode is Mode.KERNEL else None
    rates = [line.bounded(k, 0, _RATE_MAX, "a rate in Mbit/s", 0) for k in _RATE_KEYS]
    if rates[1] and rates[0] > rates[1]:
        raise line.error("min_tx_rate_mbps", f"{rates[0]} is above max_tx_rate_mbps {rates[1]}")
    slot = VfSlot(
        request_index=index,
        pool=pool,
        mode=mode,
        ifname=_ifname(line) or "",
        mac=_mac(line),
        vlan=line.bounded("vlan", 0, _VLAN_MAX, "a VLAN id"),
        trust=line.get("trust", bool),
        spoofchk=line.get("spoofchk", bool),
        min_tx_rate_mbps=rates[0],
        max_tx_rate_mbps=rates[1],
        numa=line.bounded("numa", 0, _NUMA_MAX, "a NUMA node"),
        ip=None if ip is None else _check_cidr(ip, index),
        mtu=line.bounded("mtu", MTU_MIN, MTU_MAX, "an MTU", mtu_default),
    )
    return [slot] * count


def _count(line: _Line, limit: int) -> int:
    count: int = line.get("count", int, 1)
    if count < 0:
        raise line.error("count", f"{count} is negative; ask for 1..{limit} VFs")
    if count == 0:
        raise line.error("count", f"0 asks for no VF; ask for 1..{limit} VFs or drop this request")
    if count > limit:
        raise line.error(
            "count",
            f"{count} is over the per-pod limit of {limit} (pods.max_vfs_per_pod); ask for 1..{limit}",
        )
    return count


def _ifname(line: _Line) -> str | None:
    ifname: str | None = line.get("ifname", str)
    if ifname is None:
        return None
    if not _IFNAME_RE.fullmatch(ifname) or ifname in (".", ".."):
        raise line.error(
            "ifname",
            f"{ifname!r} is not an interface name (1..{_IFNAME_MAX} of letters, digits, '_', '.', '-')",
        )
    if ifname == "lo":
        raise line.error("ifname", "'lo' is the loopback of every network namespace; pick another name")
    return ifname


def _mac(line: _Line) -> str | None:
    mac: str | None = line.get("mac", str)
    if mac is None:
        return None
    mac = mac.lower()
    if not _MAC_RE.fullmatch(mac) or int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise line.error("mac", f"{mac!r} is not a unicast MAC like 02:00:00:00:00:01")
    return mac


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


def _name_interfaces(slots: list[VfSlot], taken: frozenset[str]) -> tuple[VfSlot, ...]:
    """Give every slot without an ifname the next free `netN`; refuse duplicate names and kernel-mode
    names the pod's netns already has."""
    seen: dict[str, int] = {}
    for s in slots:
        if not s.ifname:
            continue
        if s.ifname in seen:
            raise DemandError(
                f"{s.ifname!r} is already used by request {seen[s.ifname]}", s.request_index, "ifname"
            )
        if s.mode is Mode.KERNEL and s.ifname in taken:
            raise DemandError(
                f"{s.ifname!r} already exists in the pod's network namespace (it has "
                f"{', '.join(sorted(taken))}); pick another name or leave ifname out",
                s.request_index,
                "ifname",
            )
        seen[s.ifname] = s.request_index
    out = []
    n = 1
    for s in slots:
        if s.ifname:
            out.append(s)
            continue
        while f"net{n}" in seen or f"net{n}" in taken:
            n += 1
        name = f"net{n}"
        seen[name] = s.request_index
        out.append(replace(s, ifname=name))
    return tuple(out)
