"""The store: finishing is atomic and idempotent; counters follow the time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from kingtask import keys
from kingtask.models import Outcome, new_uuid
from kingtask.store import NO_RESULT, Store, day

WHEN = datetime(2015, 10, 30, 23, 30, tzinfo=UTC)


def test_an_unknown_task_has_no_result(store: Store) -> None:
    assert store.result(new_uuid()) == NO_RESULT


def test_finishing_writes_the_result_counts_it_and_drops_it_from_the_backlog(store: Store) -> None:
    uuid = new_uuid()
    before = store.daily_count("success", "2015-10-30"), store.undo_count()
    store.client.sadd(keys.UNDO, uuid)
    assert store.undo_count() == before[1] + 1
    assert store.finish(uuid, Outcome(True, "46"), WHEN)
    assert store.result(uuid) == {"is_result_exist": 1, "is_success": 1, "message": "46"}
    assert (store.daily_count("success", "2015-10-30"), store.undo_count()) == (
        before[0] + 1,
        before[1],
    )


def test_a_repeated_finish_changes_nothing(store: Store) -> None:
    uuid = new_uuid()
    store.client.sadd(keys.UNDO, uuid)
    assert store.finish(uuid, Outcome(False, "first"), WHEN)
    failures = store.daily_count("failure", "2015-10-30")
    assert not store.finish(uuid, Outcome(True, "second"), WHEN)
    assert store.result(uuid)["message"] == "first"
    assert store.daily_count("failure", "2015-10-30") == failures


def test_results_expire_after_result_keep_time(store: Store) -> None:
    uuid = new_uuid()
    store.client.sadd(keys.UNDO, uuid)
    store.finish(uuid, Outcome(True, ""), WHEN)
    assert 3590 < store.client.ttl(keys.result(uuid)) <= 3600


def test_a_result_keep_time_of_zero_keeps_results(store: Store) -> None:
    keeping = Store(store.client, result_keep_time=0, zone=None)
    uuid = new_uuid()
    keeping.client.sadd(keys.UNDO, uuid)
    keeping.finish(uuid, Outcome(True, ""), WHEN)
    assert store.client.ttl(keys.result(uuid)) == -1


def test_the_day_is_taken_in_the_configured_zone() -> None:
    assert day(WHEN, UTC) == "2015-10-30"
    assert day(WHEN, timezone(timedelta(hours=8))) == "2015-10-31"
