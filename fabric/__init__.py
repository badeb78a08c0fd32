"""The emulated InfiniBand fabric: wire formats, devices, links, subnet manager, launcher.

``from fabric import Fabric`` gives the Python API (see :mod:`fabric.api`); ``from fabric import
Topo`` the base of topologies written in Python (:mod:`fabric.topology.pytopo`).
"""


def __getattr__(name):
    if name == "Fabric":
        from .api import Fabric

        return Fabric
    if name == "Topo":
        from .topology import Topo

        return Topo
    raise AttributeError(name)
