"""Where the shared test data lives (importable by tests without side effects)."""

import os

import pytest

# The shared example topologies (ibsim's net files, real ibnetdiscover dumps) sit beside the
# repository in ../shared/topologies, as in CI; IBFAB_TOPOLOGIES points elsewhere.
TOPOLOGIES = os.environ.get("IBFAB_TOPOLOGIES") or os.path.normpath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "topologies"))


def shared_topology(relpath: str) -> str:
    path = os.path.join(TOPOLOGIES, relpath)
    if not os.path.exists(path):
        pytest.fail(f"missing shared topology {path} (set IBFAB_TOPOLOGIES to the directory)")
    return path


def require_tools(*tools: str) -> None:
    """The Debian tools a test module drives (and ibsim's libumad2sim.so, which attaches them to
    our fabric): missing ones fail the module with the command that installs them, or skip it with
    IBFAB_ALLOW_SKIP_TOOLS=1."""
    import shutil

    from fabric.simproto.shim import ShimMissing, umad2sim_path

    miss = [t for t in tools if shutil.which(t) is None and not os.path.exists(f"/usr/sbin/{t}")]
    try:
        umad2sim_path()
    except ShimMissing:
        miss.append("libumad2sim.so (ibsim-utils)")
    if miss:
        if os.environ.get("IBFAB_ALLOW_SKIP_TOOLS") == "1":
            pytest.skip(f"not installed: {', '.join(miss)}")
        pytest.fail(f"not installed: {', '.join(miss)}: run `make debs` (scripts/install-debs.sh installs "
                    "infiniband-diags, ibsim-utils, opensm)")
