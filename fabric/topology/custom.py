"""``ibfab up --custom FILE --topo NAME[,ARGS]``: a topology from a Python file, as Mininet's
``--custom``/``--topo`` load one.

The file defines ``topos = {"name": constructor}`` (a :class:`~fabric.topology.Topo` subclass or
any callable returning a ``Topo`` or a ``Topology``, e.g. ``lambda: MyTopo(k=2)``); without
``topos``, its ``Topo`` subclasses are offered by class name. ``ARGS`` after the name are
comma-separated, ``1`` an int, ``1.5`` a float, anything else a string, ``key=value`` a keyword
argument (Mininet's ``splitArgs``).
"""

from __future__ import annotations

import os
import runpy

from .model import Topology, TopologyError
from .pytopo import Topo


class CustomTopoError(ValueError):
    """The file, the name or the topology it builds cannot be used (one line)."""


def _value(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def split_spec(spec: str) -> tuple[str, list, dict]:
    """``"name,1,k=v"`` -> ``("name", [1], {"k": "v"})``."""
    name, *rest = spec.split(",")
    args, kwargs = [], {}
    for item in rest:
        key, sep, val = item.partition("=")
        if sep:
            kwargs[key.strip()] = _value(val.strip())
        else:
            args.append(_value(item.strip()))
    return name.strip(), args, kwargs


def topos_of(path: str) -> dict:
    """The topologies ``path`` offers: its ``topos`` dict, else its ``Topo`` subclasses by name."""
    if not os.path.isfile(path):
        raise CustomTopoError(f"--custom {path}: no such file")
    try:
        ns = runpy.run_path(path, run_name="ibfab_custom")
    except SystemExit:
        raise CustomTopoError(f"--custom {path}: the file exited while loading") from None
    except Exception as exc:  # the user's code: whatever it raises is reported in one line
        where = ""
        tb = exc.__traceback__
        while tb is not None:
            if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
                where = f":{tb.tb_lineno}"
            tb = tb.tb_next
        if isinstance(exc, SyntaxError):
            where = f":{exc.lineno}"
        raise CustomTopoError(f"--custom {path}{where}: {type(exc).__name__}: {exc}") from None
    topos = ns.get("topos")
    if topos is None:
        topos = {k: v for k, v in ns.items() if isinstance(v, type) and issubclass(v, Topo) and v is not Topo}
    if not isinstance(topos, dict):
        raise CustomTopoError(f"--custom {path}: topos must be a dict of name: constructor, not "
                              f"{type(topos).__name__}")
    return topos


def load_custom(path: str, spec: str | None) -> Topology:
    """The validated topology ``spec`` (``NAME[,ARGS]``) of the file ``path``; with no ``spec``,
    the file's only topology."""
    topos = topos_of(path)
    offered = ", ".join(sorted(topos)) or "none"
    if spec is None:
        if len(topos) != 1:
            raise CustomTopoError(f"--custom {path}: name one with --topo (it has: {offered})")
        spec = next(iter(topos))
    name, args, kwargs = split_spec(spec)
    if name not in topos:
        raise CustomTopoError(f"--custom {path}: no topology {name!r} (it has: {offered})")
    try:
        made = topos[name](*args, **kwargs)
        topo = made.topology() if isinstance(made, Topo) else made
    except TopologyError:
        raise
    except Exception as exc:
        raise CustomTopoError(f"--topo {spec}: {type(exc).__name__}: {exc}") from None
    if not isinstance(topo, Topology):
        raise CustomTopoError(f"--topo {spec}: {path} made a {type(topo).__name__}, not a Topo")
    topo.validate()
    return topo
