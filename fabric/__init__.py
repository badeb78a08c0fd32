"""The emulated InfiniBand fabric: wire formats, devices, links, subnet manager, launcher."""
