"""What the soak asks for (pure): a seeded list of pods, each with its annotation and what it must get.

Kinds of pod, by what a correct system does with them whatever the faults:
- GOOD: may start with exactly its VFs, or fail with an error holding nothing (a fault hit it);
- REFUSED: a bad annotation or more VFs than the VM's quota; it must never start holding a VF;
- PLAIN: no annotation; the plugin must not touch it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from vm_side.annotations import ANNOTATION


class Kind(StrEnum):
    GOOD = "good"
    REFUSED = "refused"
    PLAIN = "plain"


@dataclass(frozen=True)
class PodPlan:
    name: str
    kind: Kind
    annotations: dict[str, str]
    vfs: int  # VFs it asks for (0 for PLAIN and bad annotations)
    dpdk: bool  # at least one of its VFs is in dpdk mode
    hold_s: float  # how long it runs before the driver removes it
    keep: bool = False  # left running at the end, so the live-pod invariants have pods to check


# Bad annotations the parser or the host must refuse, each for a different reason.
BAD_ANNOTATIONS = (
    "two",
    '[{"count": -1}]',
    '[{"vlan": 5000}]',
    '[{"mode": "sriov"}]',
    '[{"pool": "no-such-pool"}]',
    '[{"count": 1, "count": 2}]',
)


KEEP_SHARE = 0.15
KEPT_VFS_MAX = 2  # per kept pod; with KEPT_WITH_VFS pods, less than the quota: a late start always fits


def plan_pods(rng: random.Random, count: int, pools: Sequence[str], quota: int) -> list[PodPlan]:
    """`count` pods named soak-<n>; the same seed gives the same list."""
    kept_with_vfs = (quota - 1) // KEPT_VFS_MAX  # one VF of the quota stays free for the final probe
    out = []
    for i in range(count):
        plan = _one(rng, f"soak-{i}", pools, quota)
        if rng.random() < KEEP_SHARE:
            if plan.kind is not Kind.GOOD:
                plan = replace(plan, keep=True)
            elif plan.vfs <= KEPT_VFS_MAX and kept_with_vfs > 0:
                kept_with_vfs -= 1
                plan = replace(plan, keep=True)
        out.append(plan)
    return out


def _one(rng: random.Random, name: str, pools: Sequence[str], quota: int) -> PodPlan:
    hold = round(rng.uniform(0.0, 3.0), 2)
    roll = rng.random()
    if roll < 0.1:
        return PodPlan(name, Kind.PLAIN, {}, 0, False, hold)
    if roll < 0.2:
        bad = rng.choice(BAD_ANNOTATIONS)
        return PodPlan(name, Kind.REFUSED, {ANNOTATION: bad}, 0, False, hold)
    if roll < 0.25:  # over the VM's quota, within the plugin's per-pod limit
        want = quota + 1
        return PodPlan(name, Kind.REFUSED, {ANNOTATION: str(want)}, want, False, hold)
    requests = []
    for _ in range(rng.choice((1, 1, 2))):
        requests.append(
            {
                "pool": rng.choice(list(pools)),
                "count": rng.choice((1, 1, 2)),
                "mode": rng.choice(("kernel", "dpdk")),
            }
        )
    vfs = sum(int(str(r["count"])) for r in requests)
    dpdk = any(r["mode"] == "dpdk" for r in requests)
    return PodPlan(name, Kind.GOOD, {ANNOTATION: json.dumps(requests)}, vfs, dpdk, hold)
