# vfhotplug: every target does its own set-up on a fresh Debian 12 machine (as root).
PY      := .venv/bin/python
VENV    := .venv/.stamp
PROTOC  := $(PY) -m grpc_tools.protoc
PKGS    := contract vm_side nri_plugin oci_hooks host_side testbed lab

.PHONY: demo test soak lab lab-d bench lint type proto check testbeds testbed-containerd testbed-libvirt testbed-dpdk testbed-oci testbed-lab testbed-lab-d clean

$(VENV): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh

# The real containerd 1.7 (build/containerd) and 2.1 (build/containerd-2.1) with NRI; tests run on both,
# bench and demo use 1.7.
testbed-containerd: $(VENV)
	bash testbed/containerd/setup.sh

# Tier C: libvirtd 9.0 + QEMU 7.2 (TCG) started by hand, guest image under build/libvirt.
testbed-libvirt: $(VENV)
	bash testbed/libvirt/setup.sh

# Debian's dpdk-testpmd (22.11) and trixie's 24.11 unpacked under build/dpdk (ring telemetry).
testbed-dpdk: $(VENV)
	bash testbed/dpdk/setup.sh

# Debian's podman 4.3 for the OCI hook tests (runc and busybox come from the containerd test bed).
testbed-oci: $(VENV)
	bash testbed/oci/setup.sh

testbeds: testbed-containerd testbed-libvirt testbed-dpdk testbed-oci

# The lab's VM side for real (lab/vm_side, was "tier C"): a q35 TCG guest booting this machine's root over
# 9p, with containerd and vfhotplug-nri inside and vfhotplug-host on this machine hot-plugging emulated NICs
# into it.
testbed-lab: $(VENV)
	bash lab/vm_side/setup.sh

demo: $(VENV) testbed-lab
	$(PY) -m lab.demo

# The lab on real SR-IOV VFs (lab/sriov, was "tier D"): QEMU 10 (trixie chroot) with an igb SR-IOV PF plays
# the physical host; inside it libvirtd 9.0 and vfhotplug-host hot-plug real igbvf VFs into an inner guest
# (~4 min, 3 GB RAM).
testbed-lab-d: $(VENV)
	bash lab/sriov/setup.sh

lab: $(VENV) testbed-lab testbed-lab-d
	$(PY) -m pytest -q -m lab tests/lab

lab-d: $(VENV) testbed-lab-d
	$(PY) -m pytest -q -m lab tests/lab/test_sriov.py

test: $(VENV) testbeds
	$(PY) -m pytest -q -m "not lab"

# The chaos soak: faults across plugin, host service and containerd, then the invariants (20 min per release).
soak: $(VENV) testbed-containerd
	$(PY) -m tests.soak $(SOAK_ARGS)

bench: $(VENV) testbeds testbed-lab
	$(PY) -m tests.bench

lint: $(VENV)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

type: $(VENV)
	$(PY) -m mypy $(PKGS) tests

check: lint type test

# Regenerates the checked-in protobuf modules from proto/.
proto: $(VENV)
	$(PROTOC) -Iproto --python_out=. --pyi_out=. proto/nri_plugin/nri_pb/*.proto
	$(PROTOC) -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/host_side/api/*.proto

clean:
	rm -rf build .venv .mypy_cache .ruff_cache .pytest_cache
