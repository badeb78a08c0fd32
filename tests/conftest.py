import os
import shutil

import pytest


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
