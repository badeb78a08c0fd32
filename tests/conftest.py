import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # test helpers (handsm) import as plain modules

from paths import TOPOLOGIES, shared_topology  # noqa: E402,F401

# Every fabric a test launches lives under a run base of this test session, so a crashed test can
# never collide with a user's fabrics, and the session can sweep up whatever is left at the end.
_RUN_BASE = tempfile.mkdtemp(prefix="ibft-", dir="/tmp")
os.environ["IBFAB_RUN_BASE"] = _RUN_BASE


def pytest_sessionfinish(session, exitstatus):
    from fabric import launcher

    for name in launcher.list_fabrics():
        launcher.down(name)
    shutil.rmtree(_RUN_BASE, ignore_errors=True)


def pytest_report_header(config):
    import ipoib

    return f"ipoib backend: {ipoib.backend_name} (IPOIB_BACKEND={os.environ.get('IPOIB_BACKEND', '')!r})"


@pytest.fixture(scope="session")
def tshark():
    """Path of tshark. CI installs it (scripts/install-debs.sh); a missing tshark fails the test
    rather than skipping it, unless IBFAB_ALLOW_SKIP_TSHARK=1 is set for a quick local run."""
    path = shutil.which("tshark")
    if path is None:
        if os.environ.get("IBFAB_ALLOW_SKIP_TSHARK") == "1":
            pytest.skip("tshark not installed")
        pytest.fail("tshark is not installed: run `make debs` (scripts/install-debs.sh)")
    return path
