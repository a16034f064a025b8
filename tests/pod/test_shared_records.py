"""The NRI plugin and the OCI hooks share one records folder: the plugin's reconcile (which judges records
against containerd's pod list) must leave the hooks' containers and their VFs alone."""

from __future__ import annotations

from tests.pod.conftest import Guest
from tests.pod.lifecycle_checks import assert_clean, soon, vf_netdevs
from vm_side.demand import ANNOTATION
from vm_side.pod_record import Entry
from vm_side.record_store import list_pod_records


def test_reconcile_leaves_hook_containers_alone(guest: Guest, make_netns):
    pod, container = make_netns(), make_netns()
    life = guest.lifecycle()
    life.prepare("gone", "default/gone", pod, {ANNOTATION: "1"}, soon())
    # A hook container: prepared before its netns exists, moved in at createRuntime.
    life.prepare("c1", "oci/c1", "", {ANNOTATION: "1"}, soon(), netns_later=True, entry=Entry.OCI)
    life.enter_netns("c1", container, soon())

    # containerd lists no pod: the NRI pod is undone, the container keeps its VF and its lease.
    report = guest.lifecycle().reconcile({})
    assert report.undone == ("gone",) and report.synced
    assert [lease.pod_uid for lease in guest.host.leases.values()] == ["c1"]
    assert vf_netdevs(container) == ["net1"] and vf_netdevs(pod) == []
    assert [(r.pod_uid, r.entry) for r in list_pod_records(guest.records)] == [("c1", Entry.OCI)]

    guest.lifecycle().release("c1")  # its poststop
    assert_clean(guest, pod, container)
