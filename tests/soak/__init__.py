"""The chaos soak: faults at random moments across containerd, vfhotplug-nri and vfhotplug-host, then the
system's invariants (`python -m tests.soak --help`, `make soak`)."""
