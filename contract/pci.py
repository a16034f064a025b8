"""PCI addresses, shared by the host side and the VM side."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PCI_RE = re.compile(r"([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])")


@dataclass(frozen=True, order=True)
class PciAddress:
    """A PCI function address, domain:bus:slot.function (sysfs spelling: ``0000:3b:01.0``)."""

    domain: int
    bus: int
    slot: int
    function: int

    @classmethod
    def parse(cls, text: str) -> PciAddress:
        m = _PCI_RE.fullmatch(text.strip().lower())
        if m is None:
            raise ValueError(f"bad PCI address {text!r}, expected dddd:bb:ss.f (e.g. 0000:3b:01.0)")
        dom, bus, slot, fn = (int(g, 16) for g in m.groups())
        if slot > 0x1F:
            raise ValueError(f"bad PCI address {text!r}: slot {slot:#x} is over 0x1f")
        return cls(dom, bus, slot, fn)

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"
