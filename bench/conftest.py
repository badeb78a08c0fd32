"""Benchmarks report ratios against a baseline measured in the same run; targets are printed, not
asserted, so a slow machine still produces numbers."""

import pytest

_RESULTS = []


@pytest.fixture(scope="session")
def report():
    return _RESULTS


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    terminalreporter.section("targets")
    for line in _RESULTS:
        terminalreporter.write_line(line)

import os as _os
import sys as _sys
import tempfile as _tempfile

_sys.path.insert(0, _os.path.join(_os.path.dirname(__file__), "..", "tests"))  # handsm
# a run base of this session's own unless the caller gave one; made only then (setdefault's
# argument would make one every time), and removed at the end
_OWN_RUN_BASE = None if "IBFAB_RUN_BASE" in _os.environ else _tempfile.mkdtemp(prefix="ibfb-", dir="/tmp")
if _OWN_RUN_BASE:
    _os.environ["IBFAB_RUN_BASE"] = _OWN_RUN_BASE


def pytest_sessionfinish(session, exitstatus):
    import shutil

    from fabric import launcher

    for name in launcher.list_fabrics():
        launcher.down(name)
    if _OWN_RUN_BASE:
        shutil.rmtree(_OWN_RUN_BASE, ignore_errors=True)
