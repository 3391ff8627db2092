"""Outbound-call jobs through an MQTT 5 shared subscription on a real broker."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from agent.calls import CallManager
from agent.serving.jobs import CallJob, loopback_dial
from tests.mqtt.broker import Broker
from tests.mqtt.helpers import Watcher, publish
from transports.mqtt import JobDispatcher
from transports.mqtt.bus import connection_for
from transports.mqtt.settings import parse_mqtt_url

HOST = "127.0.0.1"


@contextlib.asynccontextmanager
async def workers(broker: Broker, prefix: str, *limits: int | None,
                  max_attempts: int = 10) -> AsyncIterator[list[JobDispatcher]]:
    settings = parse_mqtt_url(broker.url(prefix=prefix))
    dispatchers = []
    for index, limit in enumerate(limits):
        manager = CallManager(lambda info: [], max_sessions=limit)
        connection = connection_for(settings, f"w{index}", role="jobs")
        dispatcher = JobDispatcher(manager, connection, loopback_dial, f"w{index}",
                                   max_attempts=max_attempts, retry_delay_s=0.05)
        await dispatcher.start()
        await connection.start()
        dispatchers.append(dispatcher)
    try:
        yield dispatchers
    finally:
        for dispatcher in dispatchers:
            await dispatcher.close()
            await dispatcher.manager.close()
            await dispatcher.connection.close()


def job(seconds: float = 0.3) -> CallJob:
    return CallJob(to="sip:+15550100@carrier", metadata={"duration_s": seconds})


@pytest.mark.asyncio
async def test_each_job_goes_to_exactly_one_of_two_workers(broker: Broker) -> None:
    prefix = f"jb{uuid.uuid4().hex[:6]}"
    async with workers(broker, prefix, None, None) as (a, b), \
            Watcher(HOST, broker.plain_port, f"{prefix}/jobs/+/status") as watch:
        jobs = [job() for _ in range(10)]
        for one in jobs:
            await publish(HOST, broker.plain_port, f"{prefix}/jobs/calls", one.to_json())
        await watch.wait_for(lambda: len([s for _, s in watch.messages if s["state"] == "ended"]) == 10, 8)
    started = collections.Counter(s["job_id"] for _, s in watch.messages if s["state"] == "started")
    assert started == {j.job_id: 1 for j in jobs}
    assert sorted(a.taken + b.taken) == sorted(j.job_id for j in jobs)
    assert a.taken and b.taken, "the broker spread the jobs over both workers"
    ended = [s for _, s in watch.messages if s["state"] == "ended"]
    assert {s["reason"] for s in ended} == {"script_finished"}


@pytest.mark.asyncio
async def test_a_job_a_busy_worker_cannot_take_goes_back_to_the_other(broker: Broker) -> None:
    prefix = f"jr{uuid.uuid4().hex[:6]}"
    async with workers(broker, prefix, 0, None) as (busy, free), \
            Watcher(HOST, broker.plain_port, f"{prefix}/jobs/+/status") as watch:
        jobs = [job(0.2) for _ in range(4)]
        for one in jobs:
            busy.submit(one)
        await watch.wait_for(lambda: len([s for _, s in watch.messages if s["state"] == "started"]) == 4, 8)
    assert busy.taken == [] and sorted(free.taken) == sorted(j.job_id for j in jobs)
    returned = [s for _, s in watch.messages if s["state"] == "returned"]
    assert returned and all(s["worker"] == "w0" and s["reason"] == "busy" for s in returned)


@pytest.mark.asyncio
async def test_a_job_nobody_can_take_fails_after_its_attempts_and_bad_jobs_are_rejected(broker: Broker) -> None:
    prefix = f"jf{uuid.uuid4().hex[:6]}"
    async with workers(broker, prefix, 0, 0, max_attempts=3) as (a, _b), \
            Watcher(HOST, broker.plain_port, f"{prefix}/jobs/+/status") as watch:
        doomed = job()
        a.submit(doomed)
        await publish(HOST, broker.plain_port, f"{prefix}/jobs/calls", b'{"v": 1, "to": 5}')
        failed = await watch.wait_for(lambda: [s for _, s in watch.messages if s["state"] == "failed"], 5)
        invalid = await watch.wait_for(lambda: [s for _, s in watch.messages if s["state"] == "invalid"], 5)
        await asyncio.sleep(0.3)
    assert failed[0]["job_id"] == doomed.job_id and failed[0]["attempts"] == 3
    assert "no worker took the job after 3 attempts: busy" in failed[0]["reason"]
    assert len([s for _, s in watch.messages if s["state"] == "failed"]) == 1
    assert "'to'" in invalid[0]["reason"]
