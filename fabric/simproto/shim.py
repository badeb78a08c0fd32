"""What a tool needs to attach to a fabric through ibsim's shim: ``libumad2sim.so`` (Debian package
``libumad2sim0``, pulled in by ``ibsim-utils``) and three environment variables."""

from __future__ import annotations

import glob
import os

_GLOBS = ("/usr/lib/*/umad2sim/libumad2sim.so", "/usr/lib/umad2sim/libumad2sim.so",
          "/usr/lib64/umad2sim/libumad2sim.so", "/usr/local/lib/umad2sim/libumad2sim.so")


class ShimMissing(FileNotFoundError):
    pass


def umad2sim_path() -> str:
    """Where libumad2sim.so is; ShimMissing (one line) when it is not installed."""
    env = os.environ.get("IBFAB_UMAD2SIM")
    if env:
        if not os.path.exists(env):
            raise ShimMissing(f"IBFAB_UMAD2SIM={env} does not exist")
        return env
    for pat in _GLOBS:
        hits = sorted(glob.glob(pat))
        if hits:
            return hits[0]
    raise ShimMissing("libumad2sim.so is not installed (apt-get install ibsim-utils, or set IBFAB_UMAD2SIM)")


def tool_env(sockname: str, node: str, *, issm: bool = False) -> dict:
    """The variables that attach a preloaded tool to ``node``'s endpoint."""
    env = {"LD_PRELOAD": umad2sim_path(), "IBSIM_SOCKNAME": sockname, "SIM_HOST": node}
    if issm:
        env["SIM_SET_ISSM"] = "1"
    return env


def clean_env(base: dict) -> dict:
    """``base`` without the variables that would send the shim elsewhere (remote mode, another SM)."""
    return {k: v for k, v in base.items()
            if k not in ("IBSIM_SERVER_NAME", "IBSIM_SERVER_PORT", "SIM_SET_ISSM", "SIM_HOST", "IBSIM_SOCKNAME")}
