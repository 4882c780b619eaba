"""The local target: a Debian base image built from packages, QEMU VMs, and a directory image registry."""
