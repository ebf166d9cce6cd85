"""CI's skip rules (tests/skippolicy.py), run in inner pytest sessions (pytester, in process).

A test that needs a missing program skips locally and fails under PEERSM_REQUIRE_TOR=1; with
PEERSM_FAIL_ON_SKIP=1 a skip whose reason is not expected fails the session, an expected one does
not, and without the variable nothing changes.
"""

from __future__ import annotations

import pytest

MISSING = "peersm-no-such-program"

TESTS = f"""
import pytest

@pytest.mark.needs_tool({MISSING!r})
def test_needs_a_program():
    pass

def test_plain():
    pass
"""

SKIPS = """
import pytest

def test_unexpected():
    pytest.skip("something is missing")

@pytest.mark.skipif(True, reason="no SO_RCVBUFFORCE on this platform")
def test_expected():
    pass

def test_plain():
    pass
"""


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, src: str, **env: str) -> pytest.RunResult:
    for var in ("PEERSM_REQUIRE_TOR", "PEERSM_FAIL_ON_SKIP"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_inner=src)
    return pytester.runpytest_inprocess("-p", "tests.skippolicy", "-p", "no:cacheprovider", "-rs")


def test_a_missing_program_skips_locally(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run(pytester, monkeypatch, TESTS)
    r.assert_outcomes(passed=1, skipped=1)
    r.stdout.fnmatch_lines([f"*{MISSING} is not installed (apt-get install -y {MISSING})*"])


def test_a_missing_program_fails_under_require_tor(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = run(pytester, monkeypatch, TESTS, PEERSM_REQUIRE_TOR="1")
    r.assert_outcomes(passed=1, errors=1)  # fails in setup: reported as an error, never a skip
    r.stdout.fnmatch_lines([f"*{MISSING} is not installed*PEERSM_REQUIRE_TOR=1: this test must run*"])
    assert r.ret == pytest.ExitCode.TESTS_FAILED


def test_an_unexpected_skip_fails_the_session_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = run(pytester, monkeypatch, SKIPS, PEERSM_FAIL_ON_SKIP="1")
    r.assert_outcomes(passed=1, skipped=2)
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    r.stdout.fnmatch_lines(["*unexpected skips*", "test_inner.py::test_unexpected: something is missing"])
    assert "test_expected:" not in r.stdout.str()


def test_expected_skips_pass_in_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run(
        pytester,
        monkeypatch,
        SKIPS.replace('pytest.skip("something is missing")', "pass"),
        PEERSM_FAIL_ON_SKIP="1",
    )
    r.assert_outcomes(passed=2, skipped=1)
    assert r.ret == pytest.ExitCode.OK


def test_skips_do_not_fail_outside_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run(pytester, monkeypatch, SKIPS)
    r.assert_outcomes(passed=1, skipped=2)
    assert r.ret == pytest.ExitCode.OK
    assert "unexpected skips" not in r.stdout.str()
