"""Suite-wide settings: in CI (CI=true), hypothesis runs derandomized without an example database, so a
landing is decided by the code, not by the draw. Locally it explores freshly on every run.

Also the summary lines of the frozen 32-bit edge (tests/edge/frozen.py): how its build went and why its tests
skipped. They are here, not in tests/edge/conftest.py, because with pytest-xdist (`make test` runs two workers) the
summary is written by the controller, which loads this file but not the edge folder's; what a worker knows reaches
it on the test reports (a user property for the build's seconds)."""

import os

import pytest
from hypothesis import settings

from tests.edge import frozen

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

BUILD_PROPERTY = "frozen32_build_seconds"
_build_reported = False  # this process has put its build's seconds on a report
_build_seconds: list[float] = []  # one figure per process that took the binary (0.0: reused from build/unix32/)
_skipped: dict[str, int] = {}  # why frozen32 tests skipped -> how many


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    global _build_reported
    if not _build_reported and frozen.LAST_BUILD_SECONDS is not None:
        _build_reported = True
        outcome.get_result().user_properties.append((BUILD_PROPERTY, frozen.LAST_BUILD_SECONDS))


def pytest_runtest_logreport(report):
    _build_seconds.extend(v for k, v in report.user_properties if k == BUILD_PROPERTY)
    if report.skipped and isinstance(report.longrepr, tuple) and "frozen 32-bit edge:" in report.longrepr[2]:
        reason = report.longrepr[2].removeprefix("Skipped: ")
        _skipped[reason] = _skipped.get(reason, 0) + 1


def pytest_terminal_summary(terminalreporter):
    if _build_seconds:
        secs = max(_build_seconds)  # several workers: the one that built (the others waited for it, then reused)
        terminalreporter.write_line("frozen32: " + (f"built the 32-bit edge binary in {secs:.1f} s" if secs else
                                                    "32-bit edge binary reused from build/unix32/ (inputs unchanged)"))
    for reason, n in _skipped.items():
        terminalreporter.write_line(f"{n} frozen32 test(s) skipped: {reason}")
