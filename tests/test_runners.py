"""The runners: SPEC.md's task semantics, with real executables and real HTTP."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from kingtask import runners
from kingtask.models import Outcome

from .conftest import BIN, wait_for

CAP = 1024 * 1024


def run(
    bin_name: str, *args: str, timeout: float = 10, cap: int = CAP, bin_path: Path = BIN
) -> Outcome:
    env = runners.script_environment(["PATH"])
    return runners.run_script(
        str(bin_path), bin_name, args, timeout=timeout, max_output_bytes=cap, env=env
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_script_that_exits_0_with_empty_stderr_succeeds_with_stdout() -> None:
    assert run("sum", "12", "34") == Outcome(True, "46")


def test_trailing_newlines_are_removed_from_the_message() -> None:
    assert run("args", "x").message == '["x"]'


def test_a_task_that_writes_to_stderr_fails_with_stderr() -> None:
    assert run("warn") == Outcome(False, "something went wrong")


def test_a_nonzero_exit_with_empty_stderr_says_the_status() -> None:
    assert run("fail", "2") == Outcome(False, "exit status 2")


def test_arguments_never_reach_a_shell() -> None:
    hostile = ["; touch /tmp/kingtask-pwned", "$(id)", "`id`", "a b", "*", "&&", "|"]
    assert json.loads(run("args", *hostile).message) == hostile
    assert not Path("/tmp/kingtask-pwned").exists()


def test_a_missing_bin_name_fails_with_not_found() -> None:
    assert run("nosuch") == Outcome(False, "bin_name not found: nosuch")


def test_a_file_that_is_not_executable_fails() -> None:
    assert run("notexec") == Outcome(False, "bin_name not executable: notexec")


def test_a_folder_is_not_a_task() -> None:
    assert run("tools") == Outcome(False, "bin_name not found: tools")


def test_executables_in_subfolders_run() -> None:
    assert run("tools/hello") == Outcome(True, "hello from a subfolder")


def test_a_symlink_inside_bin_path_runs(tmp_path: Path) -> None:
    (tmp_path / "sum").write_bytes((BIN / "sum").read_bytes())
    (tmp_path / "sum").chmod(0o755)
    (tmp_path / "alias").symlink_to("sum")
    assert run("alias", "1", "2", bin_path=tmp_path) == Outcome(True, "3")


def test_a_symlink_into_a_parent_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sum").write_bytes((BIN / "sum").read_bytes())
    (tmp_path / "sum").chmod(0o755)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "alias").symlink_to("../sum")
    assert run("alias", bin_path=tmp_path / "bin") == Outcome(
        False, "bin_name outside bin_path: alias"
    )


@pytest.mark.parametrize("name", ["../sum", "/bin/true", "tools/../../bin/sum"])
def test_names_that_leave_bin_path_are_refused(tmp_path: Path, name: str) -> None:
    assert run(name, bin_path=BIN / "tools") == Outcome(False, f"bin_name outside bin_path: {name}")


def test_a_symlink_pointing_outside_bin_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "escape").symlink_to("/bin/true")
    assert run("escape", bin_path=tmp_path) == Outcome(False, "bin_name outside bin_path: escape")


def test_the_time_limit_kills_the_task_and_its_grandchildren(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    outcome = run("grandchild", str(pidfile), "60", "60", timeout=0.5)
    assert outcome == Outcome(False, "killed after 0.5 s")
    assert time.monotonic() - started < 5
    grandchild = int(pidfile.read_text())
    wait_for(lambda: not alive(grandchild), timeout=2)


def test_a_grandchild_left_behind_by_a_finished_task_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    assert run("grandchild", str(pidfile), "60") == Outcome(True, "started")
    assert time.monotonic() - started < 5
    grandchild = int(pidfile.read_text())
    wait_for(lambda: not alive(grandchild), timeout=2)


def test_output_is_capped_and_the_task_is_not_blocked() -> None:
    outcome = run("flood", str(5 * 1024 * 1024), cap=1000)
    assert outcome == Outcome(True, "x" * 1000)
    assert run("flood", str(5 * 1024 * 1024), "err", cap=10) == Outcome(False, "x" * 10)


def test_a_script_sees_only_the_allowed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    env = runners.script_environment(["PATH", "LANG"])
    outcome = runners.run_script(str(BIN), "env", (), timeout=10, max_output_bytes=CAP, env=env)
    names = {line.split("=", 1)[0] for line in outcome.message.splitlines()}
    assert "PATH" in names
    assert names <= {"PATH", "LANG", "PWD"}


def test_script_environment_keeps_only_allowed_names() -> None:
    assert runners.script_environment(["A", "C"], {"A": "1", "B": "2"}) == {"A": "1"}


@pytest.mark.parametrize(
    ("status", "stdout", "stderr", "timed_out", "expected"),
    [(0, b"46\n", b"", False, Outcome(True, "46")),
     (0, b"46\r\n\n", b"", False, Outcome(True, "46")),
     (0, b"", b"oops\n", False, Outcome(False, "oops")),
     (3, b"out", b"", False, Outcome(False, "exit status 3")),
     (-9, b"", b"", False, Outcome(False, "killed by signal SIGKILL")),
     (-15, b"", b"", True, Outcome(False, "killed after 30 s")),
     (0, b"done", b"", True, Outcome(False, "killed after 30 s")),
     (0, b"\xff", b"", False, Outcome(True, "\ufffd"))],
)  # fmt: skip
def test_judge_script_applies_the_kingtask_rule(
    status: int, stdout: bytes, stderr: bytes, timed_out: bool, expected: Outcome
) -> None:
    assert runners.judge_script(status, stdout, stderr, timed_out=timed_out, timeout=30) == expected


# -- rpc ------------------------------------------------------------------------


def call(method: str, url: str, args: str = "", timeout: float = 10, cap: int = CAP) -> Outcome:
    return runners.call_rpc(method, url, args, timeout=timeout, max_output_bytes=cap)


def test_the_seeds_rpc_example_gives_207(http_server: str) -> None:
    assert call("POST", f"{http_server}/sum", '{"a":132,"b":75}') == Outcome(True, "207")


def test_post_and_put_send_args_as_a_json_body(http_server: str) -> None:
    for method in ("POST", "PUT"):
        echo = json.loads(call(method, f"{http_server}/echo", '{"a": [1, "x"]}').message)
        assert echo["method"] == method
        assert echo["body"] == '{"a": [1, "x"]}'
        assert echo["headers"]["content-type"] == "application/json"


def test_get_and_delete_send_args_as_query_parameters(http_server: str) -> None:
    for method in ("GET", "DELETE"):
        echo = json.loads(call(method, f"{http_server}/echo", '{"a":132,"b":"x y"}').message)
        assert (echo["method"], echo["query"], echo["body"]) == (
            method,
            {"a": "132", "b": "x y"},
            "",
        )


def test_a_non_2xx_status_fails_with_the_status_and_body(http_server: str) -> None:
    assert call("GET", f"{http_server}/status/500") == Outcome(
        False, "HTTP 500: status body /status/500"
    )
    assert call("GET", f"{http_server}/status/201").success


def test_max_run_time_bounds_the_exchange(http_server: str) -> None:
    started = time.monotonic()
    assert call("GET", f"{http_server}/slow?seconds=5", timeout=0.5) == Outcome(
        False, "timed out after 0.5 s"
    )
    assert time.monotonic() - started < 3


def test_a_refused_connection_fails_with_the_reason() -> None:
    outcome = call("GET", "http://127.0.0.1:1/")
    assert not outcome.success
    assert outcome.message.startswith("request failed:")
    assert "refused" in outcome.message.lower()


def test_an_rpc_response_body_is_capped(http_server: str) -> None:
    assert call("GET", f"{http_server}/big?bytes=300000", cap=100) == Outcome(True, "y" * 100)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://[::ffff:169.254.169.254]/",
    ],
)
def test_link_local_addresses_are_refused(url: str) -> None:
    outcome = call(url=url, method="GET")
    assert not outcome.success
    assert outcome.message.endswith("is a link-local address")
    assert outcome.message.startswith("url not allowed:")


def test_with_an_allowlist_only_those_hosts_are_called(http_server: str) -> None:
    refused = runners.call_rpc(
        "GET",
        f"{http_server}/sum?a=1&b=2",
        "",
        timeout=5,
        max_output_bytes=CAP,
        allowed_hosts=("api.local",),
    )
    assert refused == Outcome(False, "url not allowed: host 127.0.0.1 is not in rpc_allowed_hosts")
    allowed = runners.call_rpc(
        "GET",
        f"{http_server}/sum?a=1&b=2",
        "",
        timeout=5,
        max_output_bytes=CAP,
        allowed_hosts=("127.0.0.1",),
    )
    assert allowed == Outcome(True, "3")


def test_redirects_are_followed_and_checked_again(http_server: str) -> None:
    to_sum = f"{http_server}/redirect?code=307&to=/sum"
    assert call("POST", to_sum, '{"a":1,"b":2}') == Outcome(True, "3")
    to_metadata = f"{http_server}/redirect?to=http://169.254.169.254/latest/meta-data/"
    assert call("GET", to_metadata) == Outcome(
        False, "url not allowed: 169.254.169.254 is a link-local address"
    )
    to_file = f"{http_server}/redirect?to=file:///etc/passwd"
    assert call("GET", to_file).message.startswith("url not allowed: file:///etc/passwd")


def test_the_workers_proxy_settings_and_credentials_are_not_used(
    http_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login user password secret\n")
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    echo = json.loads(call("GET", f"{http_server}/echo").message)
    assert "authorization" not in echo["headers"]


def test_a_symlink_swapped_after_submission_is_judged_when_the_task_runs(tmp_path: Path) -> None:
    (tmp_path / "sum").write_bytes((BIN / "sum").read_bytes())
    (tmp_path / "sum").chmod(0o755)
    (tmp_path / "job").symlink_to("sum")
    assert run("job", "1", "2", bin_path=tmp_path) == Outcome(True, "3")  # as submitted
    (tmp_path / "job").unlink()
    (tmp_path / "job").symlink_to("/bin/echo")  # swapped before the attempt runs
    assert run("job", "1", "2", bin_path=tmp_path) == Outcome(
        False, "bin_name outside bin_path: job"
    )
