"""Speed bumps: limits per peer and per visitor, refused before anything is stored."""

from __future__ import annotations

import anyio
import pytest

from statebus.errors import PayloadTooLarge, QuotaExceeded
from statebus.quotas import Limits, SpeedBumps
from tests.conftest import NodeFactory
from tests.sse import SSEReader


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_writes_refill_over_time() -> None:
    clock = Clock()
    bumps = SpeedBumps(Limits(writes_per_minute=60, write_bytes_per_minute=6000), clock=clock)
    for _ in range(60):
        bumps.write("peer a", updates=1, nbytes=10)
    with pytest.raises(QuotaExceeded) as refused:
        bumps.write("peer a", updates=1, nbytes=10)
    assert refused.value.retry_after == pytest.approx(1.0)
    bumps.write("peer b", updates=1, nbytes=10)  # others are not affected
    clock.now += 1.0
    bumps.write("peer a", updates=1, nbytes=10)


def test_a_refused_write_costs_nothing() -> None:
    clock = Clock()
    bumps = SpeedBumps(Limits(writes_per_minute=100, write_bytes_per_minute=1000), clock=clock)
    bumps.write("p", updates=1, nbytes=900)
    for _ in range(5):
        with pytest.raises(QuotaExceeded, match="bytes"):
            bumps.write("p", updates=10, nbytes=200)
    clock.now += 12.0  # 200 bytes refilled, and the updates were refunded
    bumps.write("p", updates=99, nbytes=200)
    with pytest.raises(PayloadTooLarge):
        bumps.write("p", updates=1, nbytes=5000)


def test_documents_and_streams_are_capped() -> None:
    bumps = SpeedBumps(Limits(open_streams=2, document_bytes=100))
    bumps.document(100)
    with pytest.raises(PayloadTooLarge):
        bumps.document(101)
    with bumps.stream("v"), bumps.stream("v"):
        with pytest.raises(QuotaExceeded, match="2 open streams"), bumps.stream("v"):
            pass
        with bumps.stream("w"):
            pass
    with bumps.stream("v"):
        pass


def test_the_table_of_principals_stays_bounded() -> None:
    bumps = SpeedBumps(Limits(), max_principals=100)
    for i in range(10_000):
        bumps.request(f"visitor {i}")
    assert len(bumps._buckets) <= 100


async def test_visitors_meet_the_speed_bumps_over_http(node_factory: NodeFactory) -> None:
    node = await node_factory(limits=Limits(open_streams=2, requests_per_minute=8))
    async with node.client() as owner, node.client(owner=False) as visitor:
        await owner.put("/pub", json={"a": 1})
        await owner.patch(
            "/_acl",
            json={"/pub": {"read": "public"}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        streams, readers = [], []  # keep the readers: dropping one closes its stream
        for _ in range(2):
            request = visitor.build_request("GET", "/pub", headers={"Accept": "text/event-stream"})
            response = await visitor.send(request, stream=True)
            readers.append(SSEReader(response))
            await readers[-1].data()
            streams.append(response)
        with anyio.fail_after(10):
            third = await visitor.get("/pub", headers={"Accept": "text/event-stream"})
        assert third.status_code == 429
        assert third.json()["error"] == "quota_exceeded"
        assert int(third.headers["retry-after"]) >= 1
        await streams.pop().aclose()
        readers.pop()
        with anyio.fail_after(10):  # the place comes back once the server sees the close
            while True:
                request = visitor.build_request(
                    "GET", "/pub", headers={"Accept": "text/event-stream"}
                )
                response = await visitor.send(request, stream=True)
                if response.status_code == 200:
                    break
                await response.aclose()
                await anyio.sleep(0.05)
        streams.append(response)
        spent = [
            await visitor.get("/pub", headers={"Accept": "application/json"}) for _ in range(8)
        ]
        assert spent[-1].status_code == 429  # the request rate, 8 a minute, is spent too
        assert spent[-1].json()["error"] == "quota_exceeded"
        assert (await owner.get("/pub", headers={"Accept": "application/json"})).status_code == 200
        for stream in streams:
            await stream.aclose()
