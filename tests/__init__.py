"""vfhotplug tests."""
