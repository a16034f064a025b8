"""The host Attach call of a pod start: retried on a dropped connection, its grants paired with the slots."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from contract.host_api import GrantedVf, HostApi, HostCallError
from vm_side.demand import PodDemand, VfSlot
from vm_side.pod_record import PodRecord, VfBinding

log = logging.getLogger(__name__)
_ATTACH_TRIES = 3
_ATTACH_RETRY_S = 0.1


def attach(host: HostApi, rec: PodRecord, deadline: float, margin_s: float) -> tuple[VfBinding, ...]:
    """Asks the host for the record's slots before `deadline` less the margin; one binding per slot.

    Raises:
        HostCallError: the host refused, or stayed unreachable while time allowed retries.
        ValueError: the host answered with a different number of VFs than asked for a request.
    """
    demand = PodDemand(rec.slots)
    for attempt in range(1, _ATTACH_TRIES + 1):
        timeout = deadline - time.monotonic() - margin_s
        try:
            grants = host.attach(rec.pod_uid, rec.pod_name, demand.host_requests(), rec.request_id, timeout)
            break
        except HostCallError as e:
            # A dropped connection ("Stream removed") says nothing of the call's fate; the request id
            # makes a retry return the same leases, so try again a few times while time allows.
            left = deadline - time.monotonic() - margin_s
            if not e.retryable or attempt == _ATTACH_TRIES or left < 2 * _ATTACH_RETRY_S:
                raise
            log.warning(
                "pod %s (%s): host attach try %d: %s; retrying", rec.pod_name, rec.pod_uid, attempt, e
            )
            # A host refusing for rate says when to call again; waiting less only meets the refusal again.
            time.sleep(max(_ATTACH_RETRY_S, min(e.retry_after_s or 0.0, left - _ATTACH_RETRY_S)))
    return match_grants(rec, grants)


def match_grants(rec: PodRecord, grants: Sequence[GrantedVf]) -> tuple[VfBinding, ...]:
    """Pair the host's grants with the demand's slots, in request order.

    Raises:
        ValueError: the host answered with a different number of VFs than asked for a request.
    """
    by_request: dict[int, list[GrantedVf]] = {}
    for g in grants:
        by_request.setdefault(g.request_index, []).append(g)
    out: list[VfBinding] = []
    slot_lists: dict[int, list[VfSlot]] = {}
    for s in rec.slots:
        slot_lists.setdefault(s.request_index, []).append(s)
    for line, (index, slots) in enumerate(sorted(slot_lists.items())):
        got = by_request.get(line, [])
        if len(got) != len(slots):
            raise ValueError(f"host granted {len(got)} VFs for request {index}, asked {len(slots)}")
        out.extend(VfBinding(slot=s, grant=g, guest_pci=g.guest_pci) for s, g in zip(slots, got, strict=True))
    return tuple(out)
