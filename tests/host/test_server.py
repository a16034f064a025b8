"""The real gRPC server over TCP with mTLS on 127.0.0.1 and over the admin unix socket."""

from __future__ import annotations

import stat
import urllib.request

import grpc
import pytest
from prometheus_client import generate_latest

from contract.errors import Exhausted, HostSideError
from contract.host_api import HostApi, HostCallError, VfRequest
from host_side import admin_cli
from host_side.api import hostplug_pb2 as pb
from host_side.api import hostplug_pb2_grpc as pb_grpc
from host_side.backends.base import lease_alias
from host_side.metrics import Metrics
from host_side.server import status_of
from testbed.waiting import free_port
from tests.host.conftest import Pki, Service, running_service


def test_attach_list_health_release_over_mtls(service: Service):
    with service.client("vm-a") as c:
        api: HostApi = c  # what the VM side types against (checked by mypy)
        (vf,) = api.attach("uid-1", "web-0", [VfRequest("net", vlan=5)], "rid-1", timeout_s=10)
        assert vf.vlan == 5 and vf.guest_pci is not None
        assert service.bed.hotplug.plugged_vfs() == {str(vf.host_pci): ("dom-vm-a", lease_alias(vf.lease_id))}
        (le,) = c.list_leases()
        assert (le.lease_id, le.state, le.vm, le.pod_name, le.mac) == (
            vf.lease_id,
            "attached",
            "vm-a",
            "web-0",
            vf.mac,
        )
        h = c.health()
        assert (h.serving, h.identity, h.backend, h.vfs[("net", "attached")]) == (True, "vm-a", "sim", 1)
        # Retried with its id, the answer is the same.
        assert c.attach("uid-1", "web-0", [VfRequest("net", vlan=5)], "rid-1", timeout_s=10) == [vf]
        c.release("uid-1", "rel-1", timeout_s=10)
        assert c.list_leases() == [] and service.bed.hotplug.plugged_vfs() == {}
        c.sync(["uid-2"], timeout_s=5)


@pytest.mark.parametrize(
    ("setup", "req", "code"),
    [
        (None, VfRequest("net", vlan=4095), "INVALID_ARGUMENT"),
        (None, VfRequest("net", mac="01:00:00:00:00:01"), "INVALID_ARGUMENT"),
        (None, VfRequest("gold"), "NOT_FOUND"),
        (None, VfRequest("net", count=5), "RESOURCE_EXHAUSTED"),
        (None, VfRequest("net", spoofchk=False), "PERMISSION_DENIED"),
        ("shut_off", VfRequest("net"), "FAILED_PRECONDITION"),
        ("no_iommu", VfRequest("net"), "FAILED_PRECONDITION"),
        ("libvirt_down", VfRequest("net"), "UNAVAILABLE"),
        ("hang", VfRequest("net"), "DEADLINE_EXCEEDED"),
    ],
)
def test_errors_reach_the_vm_as_grpc_codes(service: Service, setup, req, code):
    hp = service.bed.hotplug
    if setup == "shut_off":
        hp.shut_off("dom-vm-a")
    elif setup == "no_iommu":
        hp.domains["dom-vm-a"].iommu = False
    elif setup == "libvirt_down":
        hp.libvirt_down = True
    elif setup == "hang":
        hp.attach_hangs = True
    with service.client("vm-a") as c, pytest.raises(HostCallError) as err:
        c.attach("uid-1", "web-0", [req], "rid-1", timeout_s=10)
    assert err.value.code == code
    assert err.value.retryable == (code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"))
    hp.libvirt_down = False
    assert [le for le in service.bed.engine.leases(None) if le.state != "quarantined"] == []
    text = generate_latest(service.metrics.registry).decode()
    assert f'vfhotplug_host_errors_total{{code="{code}",method="Attach"}} 1.0' in text


def test_status_mapping_hides_internal_details():
    assert status_of(Exhausted("pool empty")) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "pool empty")
    assert status_of(HostSideError("libvirt error 27: XML"))[0] == grpc.StatusCode.INTERNAL
    code, msg = status_of(KeyError("secret-detail"))
    assert code == grpc.StatusCode.INTERNAL and "secret" not in msg


def test_a_vm_never_sees_or_touches_another_vms_leases(service: Service):
    with service.client("vm-a") as a, service.client("vm-b") as b:
        (vf,) = a.attach("uid-1", "web-0", [VfRequest("net")], "r1", timeout_s=10)
        assert b.list_leases() == []
        with pytest.raises(HostCallError) as err:
            b.release_leases([vf.lease_id], "r2", timeout_s=5)
        assert err.value.code == "PERMISSION_DENIED"
        with pytest.raises(HostCallError) as err:
            b.release_pod("uid-1", "r3", timeout_s=5, vm="vm-a")
        assert err.value.code == "PERMISSION_DENIED"
        b.release("uid-1", "r4", timeout_s=5)  # vm-b's own "uid-1": nothing
        # vm-b attaching the same pod uid gets its own VF in its own domain.
        (vb,) = b.attach("uid-1", "web-0", [VfRequest("net")], "r1", timeout_s=10)
        plugged = service.bed.hotplug.plugged_vfs()
        assert plugged[str(vf.host_pci)][0] == "dom-vm-a" and plugged[str(vb.host_pci)][0] == "dom-vm-b"
        assert [le.lease_id for le in a.list_leases()] == [vf.lease_id]
        assert b.health().vfs[("net", "attached")] == 2  # pool counts only, no owners


def test_unknown_identity_wrong_ca_and_no_certificate_are_refused(service: Service, rogue_pki: Pki):
    with service.client("stranger") as c, pytest.raises(HostCallError) as err:
        c.list_leases(timeout_s=5)
    assert err.value.code == "PERMISSION_DENIED" and "not a VM of this host" in err.value.detail
    # A certificate with a known name from another CA: the TLS handshake fails.
    with service.client("vm-a", pki=rogue_pki) as c, pytest.raises(HostCallError) as err:
        c.list_leases(timeout_s=5)
    assert err.value.code == "UNAVAILABLE"
    # TLS without a client certificate.
    creds = grpc.ssl_channel_credentials(root_certificates=(service.pki.folder / "ca.pem").read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{service.port}", creds) as ch:
        with pytest.raises(grpc.RpcError) as rpc_err:
            pb_grpc.HostPlugStub(ch).List(  # type: ignore[no-untyped-call]
                pb.ListRequest(), timeout=5
            )
        assert rpc_err.value.code() == grpc.StatusCode.UNAVAILABLE
    # Plain TCP.
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as ch:
        with pytest.raises(grpc.RpcError) as rpc_err:
            pb_grpc.HostPlugStub(ch).List(  # type: ignore[no-untyped-call]
                pb.ListRequest(), timeout=5
            )
        assert rpc_err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert service.bed.engine.leases(None) == []


def test_admin_socket_sees_all_and_releases_but_cannot_attach(service: Service, capsys):
    sock = service.bed.cfg.listen.admin_socket
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    with service.client("vm-a") as a, service.client("vm-b") as b:
        (va,) = a.attach("uid-a", "a-0", [VfRequest("net")], "r1", timeout_s=10)
        (vb,) = b.attach("uid-b", "b-0", [VfRequest("net")], "r1", timeout_s=10)
    with service.admin() as admin:
        assert {le.lease_id for le in admin.list_leases()} == {va.lease_id, vb.lease_id}
        assert admin.health().identity == "admin"
        with pytest.raises(HostCallError) as err:
            admin.attach("uid", "x", [VfRequest("net")], "r", timeout_s=5)
        assert err.value.code == "PERMISSION_DENIED"
    assert admin_cli.main(["--socket", str(sock), "status"]) == 0
    assert admin_cli.main(["--socket", str(sock), "leases", "--vm", "vm-b"]) == 0
    out = capsys.readouterr().out
    assert "attached" in out and vb.lease_id in out and va.lease_id not in out.split("pod\n", 1)[1]
    assert admin_cli.main(["--socket", str(sock), "release", "--lease", va.lease_id]) == 0
    assert admin_cli.main(["--socket", str(sock), "release", "--pod", "uid-b", "--vm", "vm-b"]) == 0
    assert f"released {vb.lease_id}" in capsys.readouterr().out
    assert service.bed.engine.leases(None) == [] and service.bed.hotplug.plugged_vfs() == {}


def test_admin_cli_without_a_service_says_what_to_check(tmp_path, capsys):
    assert admin_cli.main(["--socket", str(tmp_path / "none.sock"), "status"]) == 2
    assert "is vfhotplug-host running" in capsys.readouterr().err


def test_metrics_count_vfs_per_state_and_phases(service: Service):
    with service.client("vm-a") as c:
        c.attach("uid-1", "web-0", [VfRequest("net", count=2)], "r1", timeout_s=10)
    text = generate_latest(service.metrics.registry).decode()
    assert 'vfhotplug_host_vfs{pool="net",state="attached"} 2.0' in text
    assert 'vfhotplug_host_vfs{pool="net",state="free"} 14.0' in text
    assert 'vfhotplug_host_phase_seconds_count{phase="hotplug"} 2.0' in text
    assert 'vfhotplug_host_call_seconds_count{method="Attach"} 1.0' in text


def test_claim_takes_warm_spares_over_grpc(lab_pki: Pki):
    with running_service(lab_pki, warm=1) as service, service.client("vm-a") as c:
        assert service.bed.engine.refill_warm() == 4
        (spare,) = [le for le in c.list_leases() if le.state == "warm"]
        (vf,) = c.claim("uid-1", "web-0", [VfRequest("net", vlan=7)], "c1", timeout_s=5)
        assert (vf.lease_id, vf.vlan, vf.guest_pci is not None) == (spare.lease_id, 7, True)
        with pytest.raises(HostCallError) as err:
            c.claim("uid-2", "web-1", [VfRequest("net")], "c2", timeout_s=5)
        assert err.value.code == "RESOURCE_EXHAUSTED" and "use Attach" in err.value.detail


def test_metrics_endpoint_serves_prometheus_text():
    metrics = Metrics()
    metrics.observe("netlink", 0.002)
    port = free_port()
    metrics.serve(f"127.0.0.1:{port}")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'vfhotplug_host_phase_seconds_count{phase="netlink"} 1.0' in text
