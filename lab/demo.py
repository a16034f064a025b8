"""`make demo`: the whole vfhotplug flow on the lab's VM side, narrated.

Boots the lab guest, starts the host service (emulated-nic backend) and vfhotplug-nri in the guest, creates
a kernel-mode pod with 2 VFs and a dpdk-mode pod with 1, shows what each pod sees, lets a DPDK app in the
dpdk pod send through vfio while the host counts its frames, shows the host's lease table and the latency
per phase, removes the pods and shows that every VF is back.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from host_side.backends.base import lease_alias
from lab.vm_side.dpdk_app import HostPacketDump, frames_from, sent_by_testpmd, txonly_argv
from lab.vm_side.pods import PodView, demand
from lab.vm_side.report import lease_table, pod_report, release_phases, start_phases, table
from lab.vm_side.stack import LabStack

T = TypeVar("T")


class Narrator:
    """Progress lines with the time since the start; plain text, so CI logs read the same as a terminal."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self._t0:6.1f}s] {text}", flush=True)

    def step(self, what: str, fn: Callable[[], T]) -> T:
        self.say(f"{what} ...")
        t0 = time.monotonic()
        result = fn()
        self.say(f"{what}: {time.monotonic() - t0:.2f} s")
        return result


def phase_rows(phases: list[tuple[str, float]]) -> str:
    return table(["phase", "ms"], [[label, f"{ms:.0f}"] for label, ms in phases])


def start_pod(stack: LabStack, say: Narrator, name: str, count: int, mode: str) -> PodView:
    before = stack.service.timings()
    view = say.step(
        f"pod {name}: vfhotplug.io/vfs = {count} VF(s), {mode} mode",
        lambda: stack.pods.run(name, demand(count, mode), dpdk_app=mode == "dpdk"),
    )
    print(f"\n  pod {name} sees (container {view.container_s:.2f} s after RunPodSandbox):")
    print(pod_report(view))
    prepare_ms = stack.plugin.prepare_ms(f"default/{name}")
    print(phase_rows(start_phases(before, stack.service.timings(), view.run_s, prepare_ms)))
    print()
    return view


def dpdk_app(stack: LabStack, say: Narrator, view: PodView, seconds: int = 10) -> None:
    """testpmd in the pod's container sends through vfio; the host side of the NIC counts its frames."""
    lease = view.leases[0]
    pcap = stack.lab.folder / "run" / "demo-dpdk.pcap"
    argv = txonly_argv(lease.guest_pci or "", seconds)
    with HostPacketDump(stack.lab.uri, stack.lab.domain, lease_alias(lease.lease_id), pcap):
        res = say.step(
            f"DPDK app (dpdk-testpmd txonly, {seconds} s) in {view.name} on {lease.guest_pci} via vfio",
            lambda: stack.lab.agent.call(
                "exec", timeout_s=90, container_id=view.container_id, cmd=argv, timeout=60
            ),
        )
    seen = frames_from(pcap.read_bytes(), lease.mac)
    pcap.unlink()
    sent = sent_by_testpmd(res["stdout"])
    print(f"    testpmd sent {sent} frames; the host side of the NIC saw {seen} from {lease.mac}\n")


def remove_pod(stack: LabStack, say: Narrator, view: PodView) -> None:
    before = stack.service.timings()
    seconds = say.step(f"removing pod {view.name}", lambda: stack.pods.remove(view))
    stack.pods.wait_no_leases(view.uid)
    print(phase_rows(release_phases(before, stack.service.timings(), seconds)))


def run() -> int:
    say = Narrator()
    say.say("vfhotplug demo, the VM side for real: this machine is the host, a q35 TCG guest is the VM")
    stack = LabStack(progress=lambda what: say.say(what + " ..."))
    with stack:
        say.say("up: " + ", ".join(f"{k} {v:.2f} s" for k, v in stack.phases.items()))
        kernel = start_pod(stack, say, "kernel-pod", 2, "kernel")
        dpdk = start_pod(stack, say, "dpdk-pod", 1, "dpdk")
        dpdk_app(stack, say, dpdk)
        print("  host lease table (vfhotplug-host, admin socket):")
        print(lease_table(stack.service.leases()))
        print()
        for view in (kernel, dpdk):
            remove_pod(stack, say, view)
        left = stack.pods.wait_no_leases()
        final = stack.lab.guest_pci()
        free = sum(n for (_pool, state), n in stack.service.vf_counts().items() if state == "free")
        same = set(final) == set(stack.baseline)
        print(f"\n  host leases left: {len(left)}; free VFs: {free}/{stack.vfs}")
        print(f"  guest PCI tree as at boot: {'yes' if same else sorted(set(final) ^ set(stack.baseline))}")
        ok = not left and same and free == stack.vfs
        say.say("every VF is back" if ok else "NOT everything came back: see above")
    say.say("done")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__)
    parser.add_argument("--verbose", action="store_true", help="log what the lab does")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    return run()


if __name__ == "__main__":
    sys.exit(main())
