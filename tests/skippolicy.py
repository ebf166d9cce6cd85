"""A pytest plugin (loaded by tests/conftest.py): tests that need a program, and skips CI does not expect.

* ``@pytest.mark.needs_tool("curl")``: the test is skipped when the program is not on PATH, unless
  ``PEERSM_REQUIRE_TOR=1`` (set by CI), in which case it fails and says what to install.
* With ``PEERSM_FAIL_ON_SKIP=1`` (set by CI) a session in which a test was skipped for a reason not
  in :data:`EXPECTED_SKIPS` fails (exit status 1), and the summary lists those skips.
"""

from __future__ import annotations

import os
import shutil

import pytest

#: Skip reasons CI accepts: a platform without the feature the test checks.
EXPECTED_SKIPS = frozenset({"no SO_RCVBUFFORCE on this platform"})


def skip_reason(report: pytest.TestReport) -> str:
    """The reason a skipped report gives (``pytest.skip`` and ``skipif`` alike)."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


class SkipPolicy:
    def __init__(self, *, require_tools: bool, fail_on_skip: bool) -> None:
        self.require_tools = require_tools
        self.fail_on_skip = fail_on_skip
        self.unexpected: list[str] = []  # "nodeid: reason" of each skip not in EXPECTED_SKIPS

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        for mark in item.iter_markers("needs_tool"):
            for tool in mark.args:
                if shutil.which(tool) is None:
                    hint = f"{tool} is not installed (apt-get install -y {tool})"
                    if self.require_tools:
                        pytest.fail(f"{hint} and PEERSM_REQUIRE_TOR=1: this test must run", pytrace=False)
                    pytest.skip(hint)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = skip_reason(report)
            if reason not in EXPECTED_SKIPS:
                self.unexpected.append(f"{report.nodeid}: {reason}")

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.fail_on_skip and self.unexpected:
            terminalreporter.section("unexpected skips (PEERSM_FAIL_ON_SKIP=1)", red=True)
            for line in self.unexpected:
                terminalreporter.line(line)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.fail_on_skip and self.unexpected and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs_tool(*names): runs programs found on PATH (skipped without them; fails instead "
        "under PEERSM_REQUIRE_TOR=1)",
    )
    config.pluginmanager.register(
        SkipPolicy(
            require_tools=os.environ.get("PEERSM_REQUIRE_TOR") == "1",
            fail_on_skip=os.environ.get("PEERSM_FAIL_ON_SKIP") == "1",
        ),
        "peersm-skip-policy",
    )
