"""The annotation names of the contract, in a module with no imports: the OCI hooks check for them on
their fast path (containers without VFs), where every imported module costs start-up time."""

ANNOTATION = "vfhotplug.io/vfs"
