"""Software that runs on the fabric's HCAs, and commands that extend ``ibfab``, found by name.

The fabric knows nothing of IP: IPoIB (the ``ipoib`` package) registers itself through entry points
of this distribution (``pyproject.toml``)::

    [project.entry-points."ibfab.node_software"]
    ipoib = "ipoib.software:SOFTWARE"
    [project.entry-points."ibfab.commands"]
    ipoib = "ipoib.cli:register"

A node software object has ``name`` and ``description``, ``check_config(dict) -> dict`` (its
settings from ``Fabric(**kw)`` and ``ibfab up``; a bad one raises ValueError), ``attach(host)``
(run it on the HCAs of a device host, :class:`fabric.host.DeviceHost`), ``node_class`` (what
``fab.nodes[name]`` is, a :class:`fabric.api.HcaNode`) and, optionally, ``demo(fc, info, args) ->
bool`` (the traffic part of ``ibfab demo``), ``describe(info, client) -> dict`` (what ``ibfab
status`` shows of it; ``client`` a :class:`fabric.launcher.FabricClient`; the per-node dicts it
names in ``status_columns``, ``((title, key), ...)``, are columns of the device lines, and a
``status_line`` string joins the summary), ``wait_ready(info, deadline=, progress=)`` (``ibfab
up`` waits for it after SUBNET UP, reporting to ``progress``) and ``cleanup(info)`` (remove what it made outside the
run directory, called by ``ibfab down`` after the hosts stopped, also after they were killed). A command plugin is ``register(subparsers, common)``,
which adds subcommands to ``ibfab``.

``none`` (bare HCAs, nothing on them) is always there.

The launcher records the entry point's object reference (``module:attr``) in ``fabric.json``, and
the device hosts load that (:func:`load_ref`): reading the distributions' metadata costs an import
of ``importlib.metadata`` (20 ms) in the process that forks the hosts, on the way to every launch.
"""

from __future__ import annotations

import importlib

NONE = "none"
DEFAULT = "ipoib"  # what a fabric runs on its HCAs unless told otherwise


def _group(group: str) -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=group)}


def node_software_names() -> list[str]:
    return sorted(_group("ibfab.node_software")) + [NONE]


def _entry(name: str):
    ep = _group("ibfab.node_software").get(name)
    if ep is None:
        raise ValueError(f"unknown node software {name!r} (installed: {', '.join(node_software_names())})")
    return ep


def node_software(name: str | None, ref: str | None = None):
    """The node software called ``name``, or None for ``none``; ``ref``: its entry point's
    ``module:attr`` as :func:`node_software_ref` gave it (no metadata read)."""
    if name in (None, NONE):
        return None
    if ref:
        return load_ref(ref)
    return _entry(name).load()


def node_software_ref(name: str | None) -> str | None:
    """``module:attr`` of the node software called ``name`` (None for ``none``)."""
    if name in (None, NONE):
        return None
    return _entry(name).value


def load_ref(ref: str):
    """The object an entry point's ``module:attr`` names."""
    module, _, attr = ref.partition(":")
    if not module:
        raise ValueError(f"bad entry point reference {ref!r}: module:attr")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def command_plugins() -> list:
    """The ``register(subparsers, common)`` of every installed command plugin, by name."""
    return [ep.load() for _, ep in sorted(_group("ibfab.commands").items())]
