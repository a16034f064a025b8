"""vfhotplug host side: the VF controller that runs on the hypervisor.

It also holds the small pieces the VM side shares with it (PCI addresses, the gRPC contract), so that
there is one copy of each.
"""
