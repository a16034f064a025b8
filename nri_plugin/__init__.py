"""vfhotplug in the VM: the NRI wire layer (mux, ttrpc, stub) and the pod lifecycle core."""
