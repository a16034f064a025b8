"""vfhotplug for containers without Kubernetes: OCI runtime hooks over the same pod lifecycle core."""
