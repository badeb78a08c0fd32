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
