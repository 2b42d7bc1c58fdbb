"""Validation of client input: every parser, every class of bad input."""

from __future__ import annotations

from typing import Any

import pytest

from kingtask import models
from kingtask.errors import InvalidRequest
from kingtask.models import Rpc, Script, TaskSpec


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 0), ("", 0), ("  ", 0), (0, 0), ("0", 0), (1445562622, 1445562622),
     ("1445562622", 1445562622), (1445562622.0, 1445562622), (" 12 ", 12)],
)  # fmt: skip
def test_start_time_accepts_numbers_and_strings(value: Any, expected: int) -> None:
    assert models.parse_start_time(value) == expected


@pytest.mark.parametrize(
    "value", ["soon", "12.5", 12.5, "1e9", -1, "-5", True, [1], {"a": 1}, 10**13, "\u0661\u0662"]
)
def test_start_time_refuses_what_is_not_a_timestamp(value: Any) -> None:
    with pytest.raises(InvalidRequest, match="start_time"):
        models.parse_start_time(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, ()), ("", ()), ("60 600 3600", (60, 600, 3600)), ("  5   7 ", (5, 7)),
     ([60, "600"], (60, 600)), ("0", (0,))],
)  # fmt: skip
def test_time_interval_is_a_list_of_delays(value: Any, expected: tuple[int, ...]) -> None:
    assert models.parse_time_interval(value) == expected


@pytest.mark.parametrize(
    "value", ["60,600", "a b", "-1", [1.5], 7, {"a": 1}, " ".join(["1"] * 101)]
)
def test_time_interval_refuses_malformed_delays(value: Any) -> None:
    with pytest.raises(InvalidRequest, match="time_interval"):
        models.parse_time_interval(value)


def test_max_run_time_absent_or_zero_means_the_worker_default() -> None:
    assert models.parse_max_run_time(None, 100) is None
    assert models.parse_max_run_time("", 100) is None
    assert models.parse_max_run_time(0, 100) is None
    assert models.parse_max_run_time("30", 100) == 30


@pytest.mark.parametrize("value", ["x", -1, 101, "1.5"])
def test_max_run_time_refuses_bad_values_and_values_over_the_limit(value: Any) -> None:
    with pytest.raises(InvalidRequest, match="max_run_time"):
        models.parse_max_run_time(value, 100)


@pytest.mark.parametrize("value", ["example", "tools/hello", "a.b", "..hidden", "x..y"])
def test_bin_name_may_name_files_and_subfolders(value: str) -> None:
    assert models.parse_bin_name(value) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [(None, "required"), ("", "required"), ("/bin/sh", "relative"), ("../x", "'..'"),
     ("a/../../x", "'..'"), ("./x", "'.'"), ("a//b", "empty"), ("a/", "empty"),
     ("a\x00b", "NUL"), (5, "string"), (["x"], "string")],
)  # fmt: skip
def test_bin_name_never_leaves_bin_path(value: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        models.parse_bin_name(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, ()), ("", ()), ("12 34", ("12", "34")), ("12  hello ", ("12", "hello")),
     (["a b", "c"], ("a b", "c")), (12, ("12",))],
)  # fmt: skip
def test_script_args_are_split_on_spaces_or_given_as_a_list(value: Any, expected: tuple) -> None:
    assert models.parse_script_args(value) == expected


@pytest.mark.parametrize("value", [[1], ["a", None], {"a": 1}, "a\x00b", True])
def test_script_args_refuse_other_types(value: Any) -> None:
    with pytest.raises(InvalidRequest, match="args"):
        models.parse_script_args(value)


@pytest.mark.parametrize(
    ("value", "expected"), [("get", "GET"), ("Post", "POST"), ("PUT", "PUT"), ("delete", "DELETE")]
)
def test_method_is_one_of_four_in_any_case(value: str, expected: str) -> None:
    assert models.parse_method(value) == expected


@pytest.mark.parametrize("value", [None, "", "PATCH", "HEAD", 1])
def test_method_refuses_others(value: Any) -> None:
    with pytest.raises(InvalidRequest, match="method"):
        models.parse_method(value)


@pytest.mark.parametrize(
    "value", ["http://127.0.0.1:1323/sum", "https://example.com", "HTTP://x.org/a?b=c"]
)
def test_url_takes_http_and_https(value: str) -> None:
    assert models.parse_url(value) == value


@pytest.mark.parametrize(
    "value",
    [None, "", "ftp://x.org", "file:///etc/passwd", "http://", "x.org/path", "http://a b",
     "http://x.org:99999/", "http://x.org/\nb", "http://" + "a" * 9000, 5],
)  # fmt: skip
def test_url_refuses_other_schemes_and_malformed_urls(value: Any) -> None:
    with pytest.raises(InvalidRequest, match="url"):
        models.parse_url(value)


def test_rpc_args_is_a_json_document() -> None:
    assert models.parse_rpc_args('{"a":132,"b":75}', "POST") == '{"a":132,"b":75}'
    assert models.parse_rpc_args({"a": 1}, "POST") == '{"a":1}'
    assert models.parse_rpc_args("[1, 2]", "PUT") == "[1, 2]"
    assert models.parse_rpc_args("", "GET") == ""


@pytest.mark.parametrize(
    ("value", "method"), [("{a:1}", "POST"), ("[1]", "GET"), ("3", "DELETE"), (True, "POST")]
)
def test_rpc_args_refuses_what_is_not_json_or_not_an_object_for_get(
    value: Any, method: str
) -> None:
    with pytest.raises(InvalidRequest, match="args"):
        models.parse_rpc_args(value, method)


def test_query_params_turn_members_into_strings() -> None:
    assert models.query_params('{"a":132,"b":"x","c":true,"d":[1]}') == {
        "a": "132",
        "b": "x",
        "c": "true",
        "d": "[1]",
    }
    assert models.query_params("") == {}


def test_uuid_is_checked_and_lowercased() -> None:
    assert (
        models.parse_uuid("DB3E0B22-A249-4ED2-9532-FC6318CCD321")
        == "db3e0b22-a249-4ed2-9532-fc6318ccd321"
    )
    for bad in (
        "x",
        "db3e0b22a2494ed29532fc6318ccd321",
        "db3e0b22-a249-4ed2-9532-fc6318ccd32z",
        "db3e0b22-a249-4ed2-9532-fc6318ccd321\n",
    ):
        with pytest.raises(InvalidRequest, match="uuid"):
            models.parse_uuid(bad)


def test_dates_are_real_days_in_iso_form() -> None:
    assert models.parse_date("2015-10-30") == "2015-10-30"
    for bad in ("2015-13-01", "2015-02-30", "20151030", "2015-1-3", "yesterday", "2015-10-30\n"):
        with pytest.raises(InvalidRequest, match="date"):
            models.parse_date(bad)


def test_a_spec_survives_the_round_trip_through_a_message() -> None:
    for job in (Script("example", ("12", "34")), Rpc("POST", "http://h/sum", '{"a":1}')):
        spec = TaskSpec("u", job, start_time=5, time_interval=(1, 2), max_run_time=9)
        assert TaskSpec.from_message(spec.kind, "u", spec.to_message()) == spec


def test_a_script_spec_is_built_from_strings_as_httpie_sends_them() -> None:
    spec = models.script_spec(
        {
            "bin_name": "mytask",
            "args": "12 hello",
            "start_time": "1445562622",
            "time_interval": "60 600 3600",
        },
        max_task_run_time=100,
    )
    assert spec.job == Script("mytask", ("12", "hello"))
    assert (spec.start_time, spec.time_interval, spec.max_run_time) == (
        1445562622,
        (60, 600, 3600),
        None,
    )
    assert models.parse_uuid(spec.uuid) == spec.uuid
