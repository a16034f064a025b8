"""The chaos thread: at seeded random moments one fault on one component, held for a random while, then
repaired the way the component's supervisor would (restart after a kill, SIGCONT after a freeze)."""

from __future__ import annotations

import logging
import random
import signal
from collections import Counter
from collections.abc import Callable, Sequence
from enum import StrEnum

from tests.soak.background import Background
from tests.soak.system import SoakSystem

log = logging.getLogger(__name__)


class Fault(StrEnum):
    PLUGIN_KILL = "kill -9 vfhotplug-nri"
    PLUGIN_FREEZE = "SIGSTOP vfhotplug-nri"
    HOST_KILL = "kill -9 vfhotplug-host"
    HOST_FREEZE = "SIGSTOP vfhotplug-host"
    CONTAINERD_KILL = "kill -9 containerd"
    CONTAINERD_FREEZE = "SIGSTOP containerd"
    PORT_DROP = "host port dropped"
    DISK_FULL = "plugin state disk full"


ALL_FAULTS: tuple[Fault, ...] = tuple(Fault)


class Chaos(Background):
    """Runs until `stop()`; `counts` says how many faults of each kind were injected."""

    def __init__(
        self,
        system: SoakSystem,
        rng: random.Random,
        faults: Sequence[Fault] = ALL_FAULTS,
        gap_s: tuple[float, float] = (1.0, 4.0),
        hold_s: tuple[float, float] = (0.3, 3.0),
    ) -> None:
        super().__init__("chaos", join_s=120)
        self.system = system
        self.rng = rng
        self.faults = tuple(faults)
        self.gap_s = gap_s
        self.hold_s = hold_s
        self.counts: Counter[Fault] = Counter()
        self.errors: list[str] = []

    def _run(self) -> None:
        # Rounds of every fault once, each round shuffled: even a short soak injects every kind.
        order: list[Fault] = []
        while not self._stop.wait(self.rng.uniform(*self.gap_s)):
            if not order:
                order = self.rng.sample(self.faults, len(self.faults))
            fault = order.pop()
            hold = self.rng.uniform(*self.hold_s)
            log.info("chaos: %s for %.1fs", fault, hold)
            try:
                self._inject(fault, hold)
                self.counts[fault] += 1
            except Exception as e:  # a repair that fails is a finding, not a crash of the soak
                self.errors.append(f"{fault}: {type(e).__name__}: {e}")
                log.exception("chaos: %s failed", fault)

    def _inject(self, fault: Fault, hold: float) -> None:
        s = self.system

        def restore() -> None:
            s.restore()

        actions: dict[Fault, tuple[str, Callable[[], None], Callable[[], None]]] = {
            Fault.PLUGIN_KILL: ("plugin", lambda: s.signal_plugin(signal.SIGKILL), restore),
            Fault.PLUGIN_FREEZE: ("plugin", lambda: s.signal_plugin(signal.SIGSTOP), restore),
            Fault.HOST_KILL: ("host", lambda: s.signal_host(signal.SIGKILL), restore),
            Fault.HOST_FREEZE: ("host", lambda: s.signal_host(signal.SIGSTOP), restore),
            Fault.CONTAINERD_KILL: ("containerd", lambda: s.signal_containerd(signal.SIGKILL), restore),
            Fault.CONTAINERD_FREEZE: ("containerd", lambda: s.signal_containerd(signal.SIGSTOP), restore),
            Fault.PORT_DROP: ("gate", s.gate.close_gate, s.gate.open_gate),
            Fault.DISK_FULL: ("disk", s.fill_state_disk, s.free_state_disk),
        }
        name, inject, repair = actions[fault]
        with s.lock(name):
            inject()
        self._stop.wait(hold)  # cut short when the churn ends
        repair()
