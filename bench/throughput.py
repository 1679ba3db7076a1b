"""Throughput of a whole broadcast through bulksms, next to an ideal sender measured in the same run.

Both send to the Twilio simulator answering in 100 ms with at most 100 requests in flight (Twilio's usual account
concurrency). The ideal sender is asyncio + aiohttp with exactly 100 requests in flight, no queue, no database:
the ceiling for this machine. bulksms goes through everything a real broadcast does: an HTTP POST to the API
(gunicorn), PostgreSQL, Celery chunk tasks on Redis, the global concurrency cap, the twilio library, and the
outcome written back. The figure that matters is the ratio, since these machines are noisy.

    python bench/throughput.py --recipients 100000

Not a test: it prints figures, and docs/benchmarks.md records the latest ones.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import requests
from sqlalchemy import create_engine, text

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY_ROOT))

from bulksms_tools.local_services import (  # noqa: E402
    EmbeddedPostgres,
    EmbeddedRedis,
    ManagedProcess,
    find_free_port,
    wait_for_port,
)
from shared.platform.api_keys import create_api_key  # noqa: E402
from shared.platform.db import create_database_engine, create_session_factory, sqlalchemy_url  # noqa: E402
from shared.platform.migrate import upgrade_to_head  # noqa: E402
from shared.platform.settings import load_settings, settings_to_environment  # noqa: E402

ACCOUNT_SID = "AC" + "be" * 16
AUTH_TOKEN = "bench-auth-token"
MESSAGING_SERVICE_SID = "MG" + "cd" * 16


def numbers(count: int) -> list[str]:
    return [f"+1555{index:07d}" for index in range(count)]


async def ideal_sender(simulator_url: str, count: int, in_flight: int) -> float:
    """Messages per second with exactly `in_flight` requests outstanding and nothing else to do."""
    url = f"{simulator_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    authorization = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    pending = iter(numbers(count))
    accepted = 0

    async def sender(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        for number in pending:
            form = {"To": number, "MessagingServiceSid": MESSAGING_SERVICE_SID, "Body": "Hello from bulksms"}
            async with session.post(url, data=form, headers={"Authorization": authorization}) as response:
                await response.read()
                if response.status == 201:
                    accepted += 1

    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(sender(session) for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
    if accepted != count:
        raise RuntimeError(f"ideal sender: only {accepted} of {count} accepted")
    return count / elapsed


def simulator_call(simulator_url: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    if payload is None and path.endswith("summary"):
        response = requests.get(f"{simulator_url}{path}", timeout=60)
    else:
        response = requests.post(f"{simulator_url}{path}", json=payload or {}, timeout=60)
    response.raise_for_status()
    return dict(response.json()) if response.content else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--ideal-recipients", type=int, default=30_000, help="messages for the ideal sender's run")
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--max-concurrency", type=int, default=100)
    parser.add_argument("--worker-processes", type=int, default=3)
    parser.add_argument("--timeout-seconds", type=float, default=900)
    parser.add_argument(
        "--with-receipts",
        action="store_true",
        help="the simulator also sends its three status callbacks per message to the stack's webhook, applied by a "
        "second worker and beat while the broadcast is sent (as in production)",
    )
    arguments = parser.parse_args()

    environment_settings = load_settings(dotenv_path=None)
    work_directory = Path(tempfile.mkdtemp(prefix="bulksms-bench-"))
    logs = REPOSITORY_ROOT / ".bulksms" / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    embedded: list[Any] = []
    processes: list[ManagedProcess] = []
    try:
        if environment_settings.database_url:
            server_url = environment_settings.database_url
        else:
            postgres = EmbeddedPostgres(work_directory / "postgres")
            server_url = postgres.start()
            embedded.append(postgres)
        admin = create_engine(sqlalchemy_url(server_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("DROP DATABASE IF EXISTS bulksms_bench WITH (FORCE)"))
            connection.execute(text("CREATE DATABASE bulksms_bench"))
        admin.dispose()
        from sqlalchemy.engine import make_url

        database_url = make_url(sqlalchemy_url(server_url)).set(database="bulksms_bench").render_as_string(False)
        upgrade_to_head(database_url)
        if environment_settings.redis_url:
            redis_url = environment_settings.redis_url.rsplit("/", 1)[0] + "/14"
        else:
            redis_server = EmbeddedRedis(work_directory / "redis")
            redis_url = redis_server.start()
            embedded.append(redis_server)

        simulator_port, api_port = find_free_port(), find_free_port()
        simulator_url = f"http://127.0.0.1:{simulator_port}"
        base_environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        processes.append(
            ManagedProcess(
                "simulator",
                [
                    sys.executable,
                    "-m",
                    "bulksms_tools.simulator",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(simulator_port),
                    "--account-sid",
                    ACCOUNT_SID,
                    "--auth-token",
                    AUTH_TOKEN,
                    "--latency-ms",
                    str(arguments.latency_ms),
                    "--max-concurrency",
                    str(arguments.max_concurrency),
                    "--no-callbacks",
                ],
                base_environment,
                log_path=logs / "simulator.log",
                working_directory=REPOSITORY_ROOT,
            ).start()
        )
        wait_for_port(simulator_port)

        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"simulator: {arguments.latency_ms} ms latency, at most {arguments.max_concurrency} in flight")
        ideal_rate = asyncio.run(ideal_sender(simulator_url, arguments.ideal_recipients, arguments.max_concurrency))
        print(f"ideal sender ({arguments.ideal_recipients:,} messages): {ideal_rate:,.0f} msg/s")
        simulator_call(simulator_url, "/_simulator/reset")
        simulator_call(simulator_url, "/_simulator/config", {"callbacks_enabled": arguments.with_receipts})

        settings = load_settings(
            {
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "TWILIO_MESSAGING_SERVICE_SID": MESSAGING_SERVICE_SID,
                "TWILIO_API_BASE_URL": simulator_url,
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}",
                "TWILIO_MAX_CONCURRENCY": str(arguments.max_concurrency),
                # What the machine can push, unpaced: bench/pacing.py measures pacing.
                "TWILIO_SEGMENTS_PER_SECOND": "unlimited",
                "PORT": str(api_port),
                "LOG_LEVEL": "WARNING",
            },
            dotenv_path=None,
        )
        environment = {**base_environment, **settings_to_environment(settings)}
        processes.append(
            ManagedProcess(
                "api",
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--bind",
                    f"127.0.0.1:{api_port}",
                    "--workers",
                    "1",
                    "--threads",
                    "4",
                    "--timeout",
                    "120",
                    "api.wsgi:app",
                ],
                environment,
                log_path=logs / "api.log",
                working_directory=REPOSITORY_ROOT,
            ).start()
        )
        processes.append(
            ManagedProcess(
                "worker",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "worker.app",
                    "worker",
                    "--queues",
                    "sms.send,sms.maintenance" if arguments.with_receipts else "sms.send,sms.maintenance,sms.status",
                    "--concurrency",
                    str(arguments.worker_processes),
                    "--loglevel",
                    "WARNING",
                    "--without-mingle",
                    "--without-gossip",
                ],
                environment,
                log_path=logs / "worker.log",
                working_directory=REPOSITORY_ROOT,
            ).start()
        )
        if arguments.with_receipts:
            # Receipts are applied by a worker of their own (as docker-compose runs them), triggered by beat.
            for name, command in (
                (
                    "status-worker",
                    [
                        "worker",
                        "--queues",
                        "sms.status",
                        "--concurrency",
                        "1",
                        "--without-mingle",
                        "--without-gossip",
                        "--hostname",
                        "status@%h",
                    ],
                ),
                ("beat", ["beat", "--schedule", str(work_directory / "beat-schedule")]),
            ):
                processes.append(
                    ManagedProcess(
                        name,
                        [sys.executable, "-m", "celery", "-A", "worker.app", *command, "--loglevel", "WARNING"],
                        environment,
                        log_path=logs / f"{name}.log",
                        working_directory=REPOSITORY_ROOT,
                    ).start()
                )
        wait_for_port(api_port)
        engine = create_database_engine(settings)
        session = create_session_factory(engine)()
        _, key = create_api_key(session, "bench")
        session.commit()
        session.close()
        time.sleep(3)  # let the worker processes finish booting, so their start-up is not counted

        body = json.dumps({"message": "Hello from bulksms", "recipients": numbers(arguments.recipients)})
        started = time.perf_counter()
        response = requests.post(
            f"http://127.0.0.1:{api_port}/v1/broadcasts",
            data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=120,
        )
        accepted_at = time.perf_counter()
        if response.status_code != 202:
            raise RuntimeError(f"intake failed: {response.status_code} {response.text[:500]}")
        broadcast_id = response.json()["id"]
        while True:
            with engine.connect() as connection:
                status = connection.execute(
                    text("SELECT status FROM broadcasts WHERE id = :id"), {"id": broadcast_id}
                ).scalar_one()
            if status == "submitted":
                break
            if time.perf_counter() - started > arguments.timeout_seconds:
                raise RuntimeError("timed out waiting for the broadcast to be submitted")
            time.sleep(0.2)
        finished = time.perf_counter()
        with engine.connect() as connection:
            states = dict(
                connection.execute(  # type: ignore[arg-type]
                    text("SELECT state, count(*) FROM messages WHERE broadcast_id = :id GROUP BY state"),
                    {"id": broadcast_id},
                ).all()
            )
            first_send, last_send = connection.execute(
                text("SELECT first_send_at, last_send_at FROM broadcasts WHERE id = :id"), {"id": broadcast_id}
            ).one()
        engine.dispose()
        summary = simulator_call(simulator_url, "/_simulator/summary")

        end_to_end_rate = arguments.recipients / (finished - started)
        sending_rate = arguments.recipients / max((last_send - first_send).total_seconds(), 1e-9)
        lost = arguments.recipients - summary["accepted"]
        results = {
            "recipients": arguments.recipients,
            "ideal_msgs_per_second": round(ideal_rate),
            "bulksms_end_to_end_msgs_per_second": round(end_to_end_rate),
            "bulksms_first_to_last_send_msgs_per_second": round(sending_rate),
            "ratio_end_to_end": round(end_to_end_rate / ideal_rate, 3),
            "intake_seconds": round(accepted_at - started, 2),
            "duplicates_at_simulator": summary["duplicate_count"],
            "lost": lost,
            "rejected_429": summary["rejected_429"],
            "max_in_flight_at_simulator": summary["max_in_flight"],
            "message_states": states,
            "worker_processes": arguments.worker_processes,
            "with_receipts": arguments.with_receipts,
        }
        print(f"bulksms ({arguments.recipients:,} recipients, POST to last outcome): {end_to_end_rate:,.0f} msg/s")
        print(f"bulksms first send to last send: {sending_rate:,.0f} msg/s")
        print(f"ratio to the ideal sender: {end_to_end_rate / ideal_rate:.2f} (target >= 0.80)")
        print(
            f"duplicates at the simulator: {summary['duplicate_count']}, lost: {lost}, "
            f"20429 answers: {summary['rejected_429']}, max in flight: {summary['max_in_flight']}"
        )
        results_directory = REPOSITORY_ROOT / "bench" / "results"
        results_directory.mkdir(exist_ok=True)
        (results_directory / "throughput.json").write_text(json.dumps(results, indent=2, default=str))
    finally:
        for process in reversed(processes):
            process.stop()
        for server in reversed(embedded):
            server.stop()


if __name__ == "__main__":
    main()
