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
