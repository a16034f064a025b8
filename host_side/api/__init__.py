"""Generated from proto/host_side/api/hostplug.proto by `make proto`; do not edit."""
