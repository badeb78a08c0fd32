"""The emulated InfiniBand fabric: wire formats, devices, links, subnet manager, launcher.

``from fabric import Fabric`` gives the Python API (see :mod:`fabric.api`).
"""


def __getattr__(name):
    if name == "Fabric":
        from .api import Fabric

        return Fabric
    raise AttributeError(name)
