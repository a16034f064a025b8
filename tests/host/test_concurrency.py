"""32 parallel Attach/Release from 4 VM identities through the real gRPC server."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import defaultdict

from contract.host_api import HostCallError, VfRequest
from tests.host.conftest import VMS, Service


def test_32_parallel_callers_never_share_a_vf_and_quotas_hold(service: Service):
    bed = service.bed
    quota = bed.vm("vm-a").quota
    owned: list[tuple[str, str, float, float]] = []  # host pci, lease id, granted at, released at
    exhausted: list[str] = []
    failures: list[BaseException] = []
    over_quota: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def watch_quotas() -> None:
        while not stop.is_set():
            for vm in VMS:
                n = len(bed.store.leases(vm=vm))
                if n > quota:
                    with lock:
                        over_quota.append(f"{vm} held {n}")
            time.sleep(0.002)

    def worker(i: int) -> None:
        rng = random.Random(i)
        vm = VMS[i % len(VMS)]
        try:
            with service.client(vm) as c:
                for k in range(4):
                    pod = f"pod-{i}-{k}"
                    try:
                        vfs = c.attach(pod, pod, [VfRequest("net", count=rng.choice((1, 2)))], f"a-{pod}", 20)
                    except HostCallError as e:
                        if e.code != "RESOURCE_EXHAUSTED":
                            raise
                        with lock:
                            exhausted.append(pod)
                        continue
                    granted = time.monotonic()
                    time.sleep(rng.uniform(0, 0.01))
                    released = time.monotonic()
                    c.release(pod, f"r-{pod}", 20)
                    with lock:
                        owned.extend((str(v.host_pci), v.lease_id, granted, released) for v in vfs)
        except BaseException as e:  # noqa: BLE001 - a thread's failure is reported by the test below
            with lock:
                failures.append(e)

    watcher = threading.Thread(target=watch_quotas)
    watcher.start()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()

    assert failures == []
    assert over_quota == []
    assert len(owned) >= 32  # most calls got VFs
    # No VF was held by two leases at once: per VF, the ownership intervals do not overlap.
    by_vf: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for pci, lease_id, t0, t1 in owned:
        by_vf[pci].append((t0, t1, lease_id))
    for pci, spans in by_vf.items():
        spans.sort()
        for (_, end, a), (start, _, b) in itertools.pairwise(spans):
            assert end < start, f"VF {pci} held by leases {a} and {b} at once"
    assert len({lid for _, lid, _, _ in owned}) == len(owned)
    assert bed.engine.leases(None) == [] and bed.hotplug.plugged_vfs() == {}
    assert sum(n for (_, state), n in bed.store.counts().items() if state == "free") == 16
