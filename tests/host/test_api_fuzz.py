"""Arbitrary messages from an authenticated VM to the real gRPC server over mTLS (engine over fakes): every
call gets a valid answer or a named error, the server stays up, no VM goes over its quota, and no call
reaches another VM's VF."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.host_api import HostCallError, VfRequest
from host_side.api import hostplug_pb2 as pb
from host_side.api import hostplug_pb2_grpc as pb_grpc
from host_side.leases import Lease
from tests.host.conftest import Pki, Service, running_service

QUOTA = 4  # what conftest.write_config gives every VM
# The errors a VM may be told; INTERNAL and UNKNOWN would mean the server crashed on the input.
NAMED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
U32 = st.integers(0, 2**32 - 1)
TEXT = st.one_of(
    st.sampled_from(["", "uid-1", "uid-2", "net", "vm-b", "x" * 300, "../../etc", "a\x00b"]),
    st.text(max_size=12),
)
SMALL = st.one_of(st.integers(0, 6), U32)
# A few ids drawn often, so calls reuse each other's: a retry, or an id another kind of call had.
IDS = st.one_of(st.sampled_from(["r1", "r2", "r3"]), TEXT)
MACS = st.sampled_from(["", "02:00:00:00:00:01", "01:00:00:00:00:01", "zz:00", "02:00:00:00:00:01x"])


@dataclass
class Fuzz:
    service: Service
    stub: pb_grpc.HostPlugStub
    theirs: pb.GrantedVf  # vm-b's lease: nothing vm-a does may touch it
    ids: set[str] = field(default_factory=set)  # ids of answered calls: a reuse replays the answer
    granted: set[str] = field(default_factory=set)  # every lease id vm-a was ever granted


@pytest.fixture(scope="module")
def fuzz(lab_pki: Pki) -> Iterator[Fuzz]:
    # Hypothesis fires calls far faster than a VM would; the rate limit has its own test.
    with running_service(lab_pki, limits="rate_per_s = 100000\nburst = 100000") as service:
        with service.client("vm-b") as b:
            (theirs,) = b.attach("uid-b", "b-0", [VfRequest("net")], "b1", timeout_s=10)
        folder = lab_pki.folder
        cert, key = lab_pki.pair("vm-a")
        creds = grpc.ssl_channel_credentials(
            (folder / "ca.pem").read_bytes(), key.read_bytes(), cert.read_bytes()
        )
        with grpc.secure_channel(f"127.0.0.1:{service.port}", creds) as channel:
            stub = pb_grpc.HostPlugStub(channel)  # type: ignore[no-untyped-call]
            mine = pb.GrantedVf(lease_id=theirs.lease_id, host_pci=str(theirs.host_pci))
            yield Fuzz(service, stub, mine)


def requests() -> st.SearchStrategy[pb.VfRequest]:
    return st.builds(
        pb.VfRequest,
        pool=st.one_of(st.just("net"), TEXT),
        count=SMALL,
        mac=MACS,
        vlan=st.none() | SMALL,
        qos=SMALL,
        trust=st.none() | st.booleans(),
        spoofchk=st.none() | st.booleans(),
        min_tx_rate_mbps=SMALL,
        max_tx_rate_mbps=SMALL,
        numa=st.none() | SMALL,
    )


def plausible_requests() -> st.SearchStrategy[pb.VfRequest]:
    """Mostly what a VM would send, so calls get past the checks into leases, quota and hot-plug."""
    return st.builds(
        pb.VfRequest,
        pool=st.just("net"),
        count=st.integers(1, 2),
        vlan=st.none() | st.integers(0, 4094),
        trust=st.none() | st.booleans(),
        numa=st.none() | st.integers(0, 2),
    )


def attach() -> st.SearchStrategy[pb.AttachRequest]:
    arbitrary = st.builds(
        pb.AttachRequest,
        pod_uid=TEXT,
        pod_name=TEXT,
        requests=st.lists(requests(), max_size=3),
        request_id=IDS,
        deadline_s=st.one_of(st.just(0.0), st.floats(0, 5), st.floats()),
    )
    plausible = st.builds(
        pb.AttachRequest,
        pod_uid=st.sampled_from(["uid-1", "uid-2", "uid-3", "uid-b"]),
        pod_name=st.just("pod"),
        requests=st.lists(plausible_requests(), min_size=1, max_size=2),
        request_id=st.one_of(IDS, st.text(min_size=1, max_size=6)),
        deadline_s=st.just(5.0),
    )
    return st.one_of(plausible, arbitrary)


def calls(fz_theirs: str) -> st.SearchStrategy[tuple[str, object]]:
    lease_ids = st.lists(st.one_of(st.just(fz_theirs), TEXT), max_size=3)
    release = st.builds(pb.ReleaseRequest, pod_uid=TEXT, lease_ids=lease_ids, request_id=IDS, vm=TEXT)
    pod_release = st.builds(
        pb.ReleaseRequest, pod_uid=st.sampled_from(["uid-1", "uid-2", "uid-3", "uid-b"]), request_id=IDS
    )
    return st.one_of(
        st.tuples(st.sampled_from(["Attach", "Claim"]), attach()),
        st.tuples(st.just("Release"), release | pod_release),
        st.tuples(st.just("Sync"), st.builds(pb.SyncRequest, live_pod_uids=st.lists(TEXT, max_size=3))),
        st.tuples(st.just("List"), st.just(pb.ListRequest())),
        st.tuples(st.just("Health"), st.just(pb.HealthRequest())),
    )


def _check_state(fz: Fuzz) -> None:
    leases = fz.service.bed.engine.leases(None)
    live = [le for le in leases if le.state != "quarantined"]
    for vm in {le.vm for le in live}:
        assert sum(le.vm == vm for le in live) <= QUOTA, f"{vm} holds more than its quota"
    pcis = [le.vf.pci for le in live]
    assert len(set(pcis)) == len(pcis), "a VF is leased twice"
    (theirs,) = [le for le in leases if le.lease_id == fz.theirs.lease_id]
    assert (theirs.vm, theirs.state, theirs.pod_uid) == ("vm-b", "attached", "uid-b")
    plugged = fz.service.bed.hotplug.plugged_vfs()
    assert plugged[fz.theirs.host_pci][0] == "dom-vm-b"
    owners = {str(le.vf.pci): le.vm for le in leases}
    assert all(dom == f"dom-{owners.get(pci)}" for pci, (dom, _) in plugged.items()), plugged


def _check_reply(fz: Fuzz, method: str, msg: object, reply: object) -> None:
    mine = {le.lease_id: le for le in fz.service.bed.engine.leases(None) if le.vm == "vm-a"}
    if isinstance(reply, pb.AttachReply):
        assert isinstance(msg, pb.AttachRequest)
        got = {v.lease_id for v in reply.vfs}
        if msg.request_id in fz.ids:  # a replay of the stored answer: its leases may be released since
            assert got <= fz.granted, "a replayed answer names a lease vm-a never had"
        else:
            assert got <= mine.keys(), "granted a lease that is not vm-a's"
            assert len(reply.vfs) == sum(r.count for r in msg.requests)
            fz.granted |= got
    elif isinstance(reply, pb.ListReply):
        assert {le.vm for le in reply.leases} <= {"vm-a"}
    elif isinstance(reply, pb.ReleaseReply | pb.SyncReply):
        assert fz.theirs.lease_id not in (*reply.released, *reply.quarantined)
    elif isinstance(reply, pb.HealthReply):
        assert reply.serving and reply.identity == "vm-a"


def test_arbitrary_calls_get_an_answer_or_a_named_error(fuzz: Fuzz):
    seen: Counter[str] = Counter()

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,  # the same examples on every run: CI stays reproducible
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        database=None,
    )
    @given(calls(fuzz.theirs.lease_id))
    def one(call: tuple[str, object]) -> None:
        method, msg = call
        try:
            reply = getattr(fuzz.stub, method)(msg, timeout=10)
        except grpc.RpcError as e:
            err: grpc.Call = e  # type: ignore[assignment]
            assert err.code() in NAMED, f"{method}({msg}) -> {err.code()}: {err.details()}"
            assert err.details(), f"{method}: {err.code()} without a message"
            seen[f"{method} {err.code().name}"] += 1
        else:
            _check_reply(fuzz, method, msg, reply)
            seen[f"{method} OK"] += 1
            if isinstance(msg, pb.AttachRequest | pb.ReleaseRequest):
                fuzz.ids.add(msg.request_id)  # answered: the host stored the answer under this id
        _check_state(fuzz)

    one()
    print(dict(sorted(seen.items())))
    # The examples reached the engine, not only its argument checks.
    assert seen["Attach OK"] >= 3 and seen["Release OK"] >= 3
    assert seen["Attach INVALID_ARGUMENT"] + seen["Claim INVALID_ARGUMENT"] >= 3
    # The server is still up: vm-a gives back all it holds and a valid attach then works.
    fuzz.stub.Release(pb.ReleaseRequest(lease_ids=[le.lease_id for le in _mine(fuzz)], request_id="end-1"))
    assert _mine(fuzz) == []
    with fuzz.service.client("vm-a") as a:
        assert (
            len(a.attach("uid-end", "end-0", [VfRequest("net", count=QUOTA)], "end-2", timeout_s=10)) == QUOTA
        )
    _check_state(fuzz)


def _mine(fz: Fuzz) -> list[Lease]:
    return [le for le in fz.service.bed.engine.leases(None) if le.vm == "vm-a"]


def test_a_request_id_another_kind_of_call_used_is_a_named_error(service: Service):
    """Found by the run above: the stored answer of a Release was replayed as an Attach's (INTERNAL)."""
    with service.client("vm-a") as a:
        a.release("uid-1", "same", timeout_s=5)
        with pytest.raises(HostCallError) as err:
            a.attach("uid-1", "web-0", [VfRequest("net")], "same", timeout_s=5)
        assert err.value.code == "INVALID_ARGUMENT" and "was used for 'release' before" in err.value.detail
        (vf,) = a.attach("uid-1", "web-0", [VfRequest("net")], "other", timeout_s=5)
        with pytest.raises(HostCallError) as err:
            a.release_leases([vf.lease_id], "other", timeout_s=5)
        assert err.value.code == "INVALID_ARGUMENT" and "was used for 'attach' before" in err.value.detail
        assert [le.lease_id for le in a.list_leases()] == [vf.lease_id]
