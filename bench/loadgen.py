"""A small HTTP load generator: concurrent clients, a new connection per request.

gunicorn's sync workers close every connection, so each request opens its own;
every server in a comparison is measured the same way.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Load:
    host: str
    port: int
    method: str
    path: str
    body: bytes = b""
    content_type: str = "application/json"

    def request(self) -> bytes:
        head = (
            f"{self.method} {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Connection: close\r\nContent-Type: {self.content_type}\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        )
        return head.encode() + self.body


async def _exchange(load: Load, request: bytes) -> bytes | None:
    """The body of a 200 answer; None for any other answer or a failed connection."""
    try:
        reader, writer = await asyncio.open_connection(load.host, load.port)
        writer.write(request)
        response = await reader.read()
        writer.close()
    except OSError:
        return None
    head, _, body = response.partition(b"\r\n\r\n")
    return body if head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")) else None


async def _clients(
    load: Load, clients: int, more: Callable[[int], bool], answers: list[bytes | None]
) -> None:
    request = load.request()

    async def client() -> None:
        while more(len(answers)):
            slot = len(answers)
            answers.append(None)  # claimed before awaiting, so totals are exact
            answers[slot] = await _exchange(load, request)

    await asyncio.gather(*(client() for _ in range(clients)))


def _for_seconds(load: Load, clients: int, seconds: float, out: multiprocessing.Queue) -> None:
    answers: list[bytes | None] = []
    deadline = time.monotonic() + seconds
    asyncio.run(_clients(load, clients, lambda _: time.monotonic() < deadline, answers))
    out.put((sum(a is not None for a in answers), sum(a is None for a in answers)))


def rate(
    load: Load, *, seconds: float = 8.0, clients: int = 16, processes: int = 2
) -> tuple[float, int]:
    """Requests per second answered 200, and how many got another answer or none."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(
            target=_for_seconds, args=(load, clients // processes, seconds, queue)
        )
        for _ in range(processes)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    results = [queue.get() for _ in workers]
    elapsed = time.monotonic() - started
    for worker in workers:
        worker.join()
    return sum(ok for ok, _ in results) / elapsed, sum(bad for _, bad in results)


def send_each(load: Load, bodies: list[bytes], *, clients: int = 8) -> list[bytes | None]:
    """Send one request per body; the body of each 200 answer, None for the others."""
    answers: list[bytes | None] = [None] * len(bodies)
    cursor = iter(range(len(bodies)))

    async def client() -> None:
        for index in cursor:
            answers[index] = await _exchange(load, replace(load, body=bodies[index]).request())

    async def main() -> None:
        await asyncio.gather(*(client() for _ in range(clients)))

    asyncio.run(main())
    return answers


def send(load: Load, total: int, *, clients: int = 8) -> list[bytes | None]:
    """Send exactly ``total`` requests; the body of each 200 answer, None for the others."""
    return send_each(load, [load.body] * total, clients=clients)
