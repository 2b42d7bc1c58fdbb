"""Property tests of the parsers: whatever a client sends, a value or a clear 403."""

from __future__ import annotations

import json
import string
from datetime import date
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kingtask import models
from kingtask.errors import InvalidRequest

DELAYS = st.lists(st.integers(min_value=0, max_value=models.MAX_DELAY), max_size=models.MAX_RETRIES)
ANYTHING = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)


def parses_or_refuses(parse: Any, *args: Any) -> Any:
    """The parser's value, or None when it refused with InvalidRequest (nothing else)."""
    try:
        return parse(*args)
    except InvalidRequest as exc:
        assert str(exc)  # a message the client can read
        return None


@given(DELAYS, st.sampled_from([" ", "  ", "\t", " \n"]))
def test_time_interval_text_round_trips(delays: list[int], gap: str) -> None:
    assert models.parse_time_interval(gap.join(map(str, delays))) == tuple(delays)
    assert models.parse_time_interval(delays) == tuple(delays)


@given(st.integers(min_value=0, max_value=models.MAX_TIMESTAMP))
def test_start_time_takes_any_timestamp_as_number_or_text(moment: int) -> None:
    assert models.parse_start_time(moment) == moment
    assert models.parse_start_time(str(moment)) == moment
    assert models.parse_start_time(f" {moment} ") == moment


@given(st.dates())
def test_every_real_day_is_a_date(day: date) -> None:
    text = day.isoformat()
    if len(text) == 10:  # years 1000 to 9999 have the form 2006-01-02
        assert models.parse_date(text) == text


@given(st.lists(st.text(alphabet=string.printable.strip(), min_size=1, max_size=8), max_size=8))
def test_script_args_split_back_into_their_words(words: list[str]) -> None:
    assert models.parse_script_args(" ".join(words)) == tuple(words)
    assert models.parse_script_args(words) == tuple(words)


@given(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=5))
def test_rpc_args_objects_become_query_parameters_of_strings(members: dict[str, Any]) -> None:
    text = models.parse_rpc_args(json.dumps(members), "GET")
    query = models.query_params(text)
    assert set(query) == set(members)
    assert all(isinstance(value, str) for value in query.values())


@given(ANYTHING)
def test_no_value_makes_a_parser_fail_other_than_with_a_403(value: Any) -> None:
    for parse in (
        models.parse_start_time,
        models.parse_time_interval,
        models.parse_script_args,
        models.parse_bin_name,
        models.parse_method,
        models.parse_url,
    ):
        parses_or_refuses(parse, value)
    parses_or_refuses(models.parse_max_run_time, value, 3600)
    parses_or_refuses(models.parse_rpc_args, value, "GET")
    parses_or_refuses(models.parse_rpc_args, value, "POST")


@given(st.text())
def test_no_path_segment_makes_the_uuid_or_date_parsers_fail_otherwise(text: str) -> None:
    parses_or_refuses(models.parse_uuid, text)
    parses_or_refuses(models.parse_date, text)


@given(ANYTHING.filter(lambda v: isinstance(v, dict)))
def test_no_json_body_makes_the_specs_fail_otherwise(body: dict[str, Any]) -> None:
    parses_or_refuses(lambda b: models.script_spec(b, max_task_run_time=3600), body)
    parses_or_refuses(lambda b: models.rpc_spec(b, max_task_run_time=3600), body)
