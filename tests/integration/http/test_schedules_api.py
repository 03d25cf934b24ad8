"""Schedules of periodic jobs over HTTP, on each backend: creating, listing, pausing,
resuming and deleting them, their errors in the API's shape, and a schedule declared in
code that a starting worker upserts and whose tick a worker then runs."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from dishka import AsyncContainer

from taskforge.application.handlers import HandlerRegistry, JobContext
from taskforge.application.periodic import default_schedules, periodic
from taskforge.application.ports import ScheduleStore
from tests.integration.http.conftest import Roles, assert_error

DEADLINE = 20.0
FAST = {"metrics_flush_interval": 0.05, "scheduler_tick": 0.02}


def body(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "cron": "*/5 * * * *", "jobType": "report", **fields}


async def test_a_new_schedule_is_created_listed_and_shown_with_its_fire_times(
    client: httpx.AsyncClient, queue_name: str
) -> None:
    created = await client.post(
        "/schedules",
        json=body(
            "nightly",
            cron="30 2 * * *",
            timezone="Europe/Berlin",
            payload={"kind": "daily"},
            maxAttempts=5,
        ),
    )

    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["source"] == "api"
    assert (schedule["paused"], schedule["previousFireAt"]) == (False, None)
    assert (schedule["queue"], schedule["maxAttempts"], schedule["catchUp"]) == (
        queue_name,
        5,
        False,
    )
    next_fire = datetime.fromisoformat(schedule["nextFireAt"])
    # 02:30 in Berlin is 00:30 or 01:30 UTC, within a day from now
    assert (next_fire.hour, next_fire.minute) in {(0, 30), (1, 30)}
    assert datetime.now(UTC) < next_fire <= datetime.now(UTC) + timedelta(days=1)
    assert (await client.get("/schedules/nightly")).json() == schedule
    assert [item["name"] for item in (await client.get("/schedules")).json()["items"]] == [
        "nightly"
    ]


async def test_posting_a_schedule_again_replaces_it_and_keeps_its_pause(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/schedules", json=body("hourly"))
    await client.post("/schedules/hourly/pause")

    replaced = await client.post("/schedules", json=body("hourly", payload={"v": 2}))

    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["payload"], replaced.json()["paused"]) == ({"v": 2}, True)


async def test_pause_hides_the_next_fire_and_resume_brings_it_back_both_idempotent(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/schedules", json=body("tidy"))

    paused = [(await client.post("/schedules/tidy/pause")).json() for _ in range(2)]
    resumed = [(await client.post("/schedules/tidy/resume")).json() for _ in range(2)]

    assert [(item["paused"], item["nextFireAt"]) for item in paused] == [(True, None)] * 2
    assert [item["paused"] for item in resumed] == [False, False]
    assert resumed[0]["nextFireAt"] is not None
    assert resumed[0]["nextFireAt"] == resumed[1]["nextFireAt"]


async def test_delete_removes_the_schedule(client: httpx.AsyncClient) -> None:
    await client.post("/schedules", json=body("gone"))

    deleted = await client.delete("/schedules/gone")

    assert deleted.status_code == 204
    assert_error(await client.get("/schedules/gone"), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/schedules/missing"),
        ("DELETE", "/schedules/missing"),
        ("POST", "/schedules/missing/pause"),
        ("POST", "/schedules/missing/resume"),
    ],
)
async def test_an_unknown_schedule_is_a_404_in_the_error_shape(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)

    error = assert_error(response, 404, "not_found")
    assert "missing" in error["message"]


async def test_a_schedule_keeps_its_priority_default_5(client: httpx.AsyncClient) -> None:
    urgent = await client.post("/schedules", json=body("urgent", priority=0))
    plain = await client.post("/schedules", json=body("plain"))

    assert (urgent.status_code, urgent.json()["priority"]) == (201, 0)
    assert (plain.status_code, plain.json()["priority"]) == (201, 5)
    assert (await client.get("/schedules/urgent")).json()["priority"] == 0
    listed = (await client.get("/schedules")).json()["items"]
    assert [item["priority"] for item in listed] == [5, 0]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),  # minute out of range
        ({"cron": "* * *"}, "cron"),  # too few fields
        ({"cron": "0 0 30 2 *"}, "cron"),  # never fires (30 February)
        ({"cron": ""}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../etc/passwd"}, "timezone"),
        ({"timezone": "Europe"}, "timezone"),  # a folder of the zone database
        ({"timezone": "localtime"}, "timezone"),  # the zone of whichever host reads it
        ({"name": "two words"}, "name"),
        ({"jobType": ""}, "jobType"),
        ({"queue": "taskforge:internal"}, "queue"),
        ({"catchUp": "yes"}, "catchUp"),
        ({"maxAttempts": 0}, "maxAttempts"),
        ({"initialDelay": 10, "maxDelay": 5}, "maxDelay"),
        ({"payload": [1]}, "payload"),
        ({"priority": 10}, "priority"),
        ({"priority": -1}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"priorty": 1}, "priorty"),  # unknown field
    ],
)
async def test_a_bad_schedule_is_a_400_naming_the_field(
    client: httpx.AsyncClient, fields: dict[str, Any], field: str
) -> None:
    response = await client.post("/schedules", json={**body("bad"), **fields})

    assert_error(response, 400, "validation_error", field)
    assert (await client.get("/schedules")).json()["items"] == []


async def test_resuming_a_schedule_whose_zone_this_system_lost_is_a_400_naming_timezone(
    client: httpx.AsyncClient, container: AsyncContainer
) -> None:
    await client.post("/schedules", json=body("far", timezone="Europe/Berlin"))
    await client.post("/schedules/far/pause")
    # Saved when the zone database had it; a newer one (or this host's) does not.
    store = await container.get(ScheduleStore)
    stored = await store.get("far")
    assert stored is not None
    gone = dataclasses.replace(stored.definition, timezone="Gone/Zone")
    await store.save(gone, stored.next_fire_at)

    response = await client.post("/schedules/far/resume")

    error = assert_error(response, 400, "validation_error", "timezone")
    assert "'Gone/Zone'" in error["message"]
    assert (await client.get("/schedules/far")).json()["paused"] is True


async def test_a_missing_cron_is_a_400_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.post("/schedules", json={"name": "n", "jobType": "report"})

    assert_error(response, 400, "validation_error", "cron")


ran: list[dict[str, Any]] = []


@pytest.fixture
def handlers() -> Iterator[HandlerRegistry]:
    """A `report` handler declared periodic in code, as a handler module would."""
    registry = HandlerRegistry()
    ran.clear()

    @periodic("*/5 * * * *", name="every-five", payload={"kind": "periodic"}, priority=2)
    @registry.handler("report")
    async def report(ctx: JobContext) -> None:
        ran.append(ctx.payload)

    yield registry
    default_schedules.clear()


@pytest.mark.parametrize("overrides", [FAST])
async def test_a_schedule_declared_in_code_is_upserted_at_start_and_its_ticks_run(
    client: httpx.AsyncClient, container: AsyncContainer, roles: Roles
) -> None:
    roles.start()
    declared = await _within(lambda: client.get("/schedules/every-five"), 200)
    assert (declared["source"], declared["priority"]) == ("code", 2)
    # Make a tick due now instead of waiting for the next five-minute mark: the schedule
    # saved with another expression takes the given next fire time. Once a day, at the
    # minute of that tick: however long the test takes, no second tick comes due in it.
    store = await container.get(ScheduleStore)
    stored = await store.get("every-five")
    assert stored is not None
    tick = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    once_a_day = dataclasses.replace(stored.definition, cron=f"{tick.minute} {tick.hour} * * *")
    await store.save(once_a_day, tick)

    async def fired_or_saved_again() -> httpx.Response:
        # The worker and the scheduler each declare the schedule as they start: the one
        # that starts last may put the five-minute expression back; then save it again.
        response = await client.get("/schedules/every-five")
        if response.json().get("cron") != once_a_day.cron:
            await store.save(once_a_day, tick)
        return response

    fired = await _within(fired_or_saved_again, 200, "previousFireAt")

    jobs = (await client.get("/jobs")).json()["items"]
    [job] = [job for job in jobs if job["jobType"] == "report"]
    assert job["idempotencyKey"] == f"schedule:every-five:{fired['previousFireAt']}"
    assert job["priority"] == 2
    await _within(lambda: client.get(f"/jobs/{job['id']}"), 200, "finishedAt")
    assert ran == [{"kind": "periodic"}]


async def _within(
    call: Any, status: int, present: str | None = None, deadline: float = DEADLINE
) -> dict[str, Any]:
    """The answer of `call` once it has `status` (and a non-null `present` field)."""
    give_up = time.monotonic() + deadline
    while True:
        response: httpx.Response = await call()
        answer: dict[str, Any] = response.json()
        if response.status_code == status and (present is None or answer.get(present)):
            return answer
        assert time.monotonic() < give_up, f"still {response.status_code}: {answer}"
        await asyncio.sleep(0.02)
