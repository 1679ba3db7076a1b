"""Fault campaign, the webhook rows (docs/reliability.md): real gunicorn processes configured as docker-compose runs
them, real Celery workers, the simulator posting signed callbacks, and an attacker on the same machine.

- 200 concurrent unsigned 1 MiB POSTs to both webhooks of both processes while a broadcast sends: the broadcast
  finishes, nothing is lost or sent twice, and no API or webhook process grows past 300 MiB.
- 100 forged-signature callbacks and 20 trickled bodies to the webhook service while receipts flow: every genuine
  receipt is applied, no forged one is, and every trickle is cut off at the read deadline.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from api.request_body import CONGESTED_TIMEOUT_SECONDS
from bulksms_tools.local_services import ManagedProcess, find_free_port
from shared.platform.api_keys import create_api_key
from shared.platform.settings import Settings
from shared.platform.task_queue import create_celery_app, enqueue_chunks
from tests.conftest import SimulatorControl, WorkerProcesses, wait_until
from tests.factories import create_broadcast
from tests.gunicorn_servers import (
    open_request,
    process_tree,
    read_status,
    resident_mebibytes,
    start_gunicorn,
)
from tests.status_callbacks import CALLBACK_PATH, callback_parameters

pytestmark = pytest.mark.e2e

INBOUND_PATH = "/webhooks/twilio/inbound"
ONE_MIB = 1024 * 1024
RSS_LIMIT_MIB = 300
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def settings(base_settings: Settings, webhook_port: int) -> Settings:
    """Callbacks go to the webhook service, as docker-compose's PUBLIC_BASE_URL says."""
    return base_settings.replace(public_base_url=f"http://127.0.0.1:{webhook_port}")


@pytest.fixture
def webhook_server(settings: Settings, webhook_port: int, artifacts_directory: Path) -> Iterator[ManagedProcess]:
    """The webhook service as docker-compose runs it: gthread, 4 processes x 2 threads."""
    log_path = artifacts_directory / "faults-webhook.log"
    log_path.unlink(missing_ok=True)
    process = start_gunicorn(
        "webhook", "api.webhook_wsgi:app", settings.replace(database_url=None), webhook_port, log_path,
        workers=4, threads=2,
    )  # fmt: skip
    yield process
    process.stop()


@pytest.fixture
def api_server(settings: Settings, artifacts_directory: Path) -> Iterator[tuple[int, ManagedProcess]]:
    """The API as docker-compose runs it: gthread, 2 processes x 8 threads (it serves the webhooks too)."""
    port = find_free_port()
    log_path = artifacts_directory / "faults-api.log"
    log_path.unlink(missing_ok=True)
    process = start_gunicorn("api", "api.wsgi:app", settings, port, log_path, workers=2, threads=8)
    yield port, process
    process.stop()


def message_states(engine: Engine, broadcast_id: object) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT state, count(*) FROM messages WHERE broadcast_id = :id GROUP BY state"), {"id": broadcast_id}
        )
        return {state: count for state, count in rows}


def stored_events(engine: Engine) -> dict[tuple[str, int | None], int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT message_status, error_code, count(*) FROM status_events GROUP BY 1, 2")
        ).all()
    return {(row[0], row[1]): row[2] for row in rows}


class MemoryWatch:
    """Samples the resident memory of every process of some gunicorn servers until stopped."""

    def __init__(self, masters: dict[str, int]) -> None:
        self.masters = masters
        self.peak: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, master in self.masters.items():
                for pid in process_tree(master):
                    key = (name, pid)
                    self.peak[key] = max(self.peak.get(key, 0.0), resident_mebibytes(pid))
            self._stop.wait(0.2)


def unsigned_megabyte_post(port: int, path: str, body: bytes, start: threading.Barrier) -> int | str:
    """One attacker: headers claiming 1 MiB, no signature, then the whole body. What came back: a status code,
    or how the server ended the connection without one (it answers 403 at once and closes, so the upload usually
    breaks off)."""
    start.wait(30)
    try:
        connection = open_request(port, path, {"Content-Type": FORM, "Content-Length": str(len(body))}, timeout=30)
    except OSError as error:
        return f"connect: {type(error).__name__}"
    with connection:
        with contextlib.suppress(OSError):  # the server stopped reading; its answer may still be there
            connection.sendall(body)
        status = read_status(connection)
    return status if status is not None else "closed"


def test_a_flood_of_unsigned_megabyte_posts_does_not_stop_a_broadcast(
    settings: Settings,
    engine: Engine,
    db_session: Session,
    simulator: SimulatorControl,
    workers: WorkerProcesses,
    webhook_server: ManagedProcess,
    webhook_port: int,
    api_server: tuple[int, ManagedProcess],
    redis_client: redis.Redis,  # requested so the test starts from an empty stream, whatever ran before
) -> None:
    api_port, api_process = api_server
    assert webhook_server.process is not None and api_process.process is not None
    _, api_key = create_api_key(db_session, "flood")
    db_session.commit()
    workers.start_worker(concurrency=2)
    workers.start_beat()
    recipients = [f"+1555{index:07d}" for index in range(400)]
    targets = [(port, path) for port in (webhook_port, api_port) for path in (CALLBACK_PATH, INBOUND_PATH)]
    body = secrets.token_bytes(ONE_MIB // 2).hex().encode()  # 1 MiB
    outcomes: Counter[int | str] = Counter()
    waves = 3
    watch = MemoryWatch({"webhook": webhook_server.process.pid, "api": api_process.process.pid})
    with watch, ThreadPoolExecutor(max_workers=200) as attackers:
        for wave in range(waves):
            start = threading.Barrier(200)
            futures = [
                attackers.submit(unsigned_megabyte_post, *targets[index % len(targets)], body, start)
                for index in range(200)
            ]
            if wave == 0:  # the broadcast is submitted over HTTP to the API while the first wave hits it
                time.sleep(0.2)
                response = requests.post(
                    f"http://127.0.0.1:{api_port}/v1/broadcasts",
                    json={"message": "Flooded but sent", "recipients": recipients},
                    headers={"Authorization": f"Bearer {api_key}"},
                    timeout=60,
                )
                assert response.status_code == 202, response.text
                broadcast_id = response.json()["id"]
            outcomes.update(future.result(timeout=120) for future in futures)

        expected = {"delivered": len(recipients)}
        wait_until(lambda: message_states(engine, broadcast_id) == expected, 180, interval=0.5, message=f"{expected}")
    peaks = sorted(watch.peak.items(), key=lambda item: -item[1])
    print(f"\nflood outcomes: {dict(outcomes)}; peak RSS (MiB): {[(k, round(v, 1)) for k, v in peaks]}")

    # Every attacker was refused: 403, or the connection closed under its upload. Nothing else, never a 5xx.
    assert set(outcomes) <= {403, "closed"}, outcomes
    assert outcomes[403] > 0
    # No process grew with the flood.
    assert peaks and all(peak < RSS_LIMIT_MIB for _, peak in peaks), peaks
    # The broadcast finished: every recipient sent exactly once, every receipt applied exactly once.
    summary = simulator.summary()
    assert summary["accepted"] == len(recipients) and summary["duplicate_count"] == 0
    assert stored_events(engine) == {("queued", None): 400, ("sent", None): 400, ("delivered", None): 400}
    with engine.connect() as connection:
        status = connection.execute(text("SELECT status FROM broadcasts WHERE id = :id"), {"id": broadcast_id})
        assert status.scalar_one() in ("submitted", "completed")


def trickle(port: int, results: list[tuple[int | None, float]]) -> None:
    """A body that would take minutes: a byte every half second after headers that promise 300. Records the
    answer and how long after the headers it came (a queue wait for a free thread, then the read deadline)."""
    began = time.monotonic()
    connection = open_request(
        port,
        f"{CALLBACK_PATH}?message_id=1&attempt=1",
        {"Content-Type": FORM, "Content-Length": "300", "X-Twilio-Signature": "c2xvdyBidXQgc3VyZQ=="},
        timeout=60,
    )
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(0.5):
            try:
                connection.send(b"x")
            except OSError:
                return

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    with connection:
        status = read_status(connection)
        results.append((status, time.monotonic() - began))
        stop.set()
    dripper.join(5)


def forge(port: int, sid: str, message_id: int) -> int:
    """A callback that would fail a delivered message, signed with a guess."""
    parameters = callback_parameters(sid, "undelivered", error_code=30007)
    response = requests.post(
        f"http://127.0.0.1:{port}{CALLBACK_PATH}?message_id={message_id}&attempt=1",
        data=parameters,
        headers={"X-Twilio-Signature": secrets.token_urlsafe(20)},
        timeout=30,
    )
    return response.status_code


def test_forged_callbacks_and_trickled_bodies_while_receipts_flow(
    settings: Settings,
    engine: Engine,
    db_session: Session,
    simulator: SimulatorControl,
    workers: WorkerProcesses,
    webhook_server: ManagedProcess,
    webhook_port: int,
    redis_client: redis.Redis,  # requested so the test starts from an empty stream, whatever ran before
) -> None:
    simulator.configure(callback_delay_ms=1000)  # receipts keep flowing for several seconds
    recipients = [f"+1555{index:07d}" for index in range(300)]
    broadcast = create_broadcast(db_session, recipients, chunk_size=50)
    workers.start_worker(concurrency=2)
    workers.start_beat()

    trickles: list[tuple[int | None, float]] = []
    tricklers = [threading.Thread(target=trickle, args=(webhook_port, trickles)) for _ in range(20)]
    for thread in tricklers:
        thread.start()
    enqueue_chunks(create_celery_app(settings), broadcast.id, range(broadcast.chunk_count))

    def known_sids() -> list[tuple[str, int]]:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT twilio_sid, id FROM messages WHERE broadcast_id = :id AND twilio_sid IS NOT NULL"),
                {"id": broadcast.id},
            ).all()
        return [(row[0], row[1]) for row in rows]

    sids = wait_until(lambda: known_sids() if len(known_sids()) >= 100 else None, 60, message="100 SIDs recorded")
    targets = random.Random(7).sample(sids, 100)
    with ThreadPoolExecutor(max_workers=10) as forgers:
        forged = Counter(forgers.map(lambda target: forge(webhook_port, *target), targets))
    for thread in tricklers:
        thread.join(60)

    expected = {"delivered": len(recipients)}
    wait_until(lambda: message_states(engine, broadcast.id) == expected, 180, interval=0.5, message=f"{expected}")
    durations = sorted(elapsed for _, elapsed in trickles)
    callbacks = simulator.summary()["callbacks"]
    print(
        f"\nforged: {dict(forged)}; trickles cut after {durations[0]:.1f}-{durations[-1]:.1f} s; callbacks: {callbacks}"
    )

    assert forged == Counter({403: 100})
    # Each cut at its deadline: the full one for the first trickle a process reads, the short one while another
    # waits there; all well inside the 15 s Twilio gives a callback, so genuine callbacks queued behind got through.
    assert len(trickles) == 20 and {status for status, _ in trickles} <= {408}, trickles
    assert all(CONGESTED_TIMEOUT_SECONDS - 0.1 < elapsed < 15 for elapsed in durations), durations
    # Every genuine receipt was applied once; no forged one was.
    assert callbacks["failed"] == 0
    assert stored_events(engine) == {("queued", None): 300, ("sent", None): 300, ("delivered", None): 300}
    assert simulator.summary()["duplicate_count"] == 0
