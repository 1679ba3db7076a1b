"""Paced sending through the whole stack, next to unpaced sending and an ideal sender measured in the same run.

Three phases against the Twilio simulator (100 ms per request, at most 100 in flight):
1. the ideal sender (asyncio + aiohttp, exactly 100 in flight, nothing else): this machine's ceiling;
2. paced: a broadcast to a Messaging Service pool of 20 senders x 5 segments/s with TWILIO_SEGMENTS_PER_SECOND=100,
   status callbacks flowing to the webhook (so the queue bound works): the rate achieved at the simulator (segments
   transmitted per second, first to last departure) over the configured one, and the deepest Twilio's queue got,
   in seconds of the pool's throughput;
3. unpaced (TWILIO_SEGMENTS_PER_SECOND=unlimited, a pool of unlimited rate, no callbacks): bulksms's first-to-last
   send rate over the ideal sender's, which pacing must not have cost.

    python bench/pacing.py                        # 20,000 paced recipients (about 3.5 minutes)
    BENCH_PACING_RECIPIENTS=100000 python bench/pacing.py   # the full 100,000 (about 17 minutes)

Not a test: it prints figures, and docs/benchmarks.md records them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY_ROOT))
sys.path.insert(0, str(REPOSITORY_ROOT / "bench"))

from throughput import ACCOUNT_SID, AUTH_TOKEN, MESSAGING_SERVICE_SID, ideal_sender  # noqa: E402

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
from shared.platform.settings import Settings, load_settings, settings_to_environment  # noqa: E402

POOL = [{"type": "long_code", "count": 20, "segments_per_second": 5}]
POOL_RATE = 100.0
LOGS = REPOSITORY_ROOT / ".bulksms" / "bench-logs"


def numbers(count: int, prefix: int) -> list[str]:
    return [f"+1555{prefix}{index:06d}" for index in range(count)]


def simulator(url: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    if payload is None:
        response = requests.get(f"{url}{path}", timeout=60)
    else:
        response = requests.post(f"{url}{path}", json=payload, timeout=60)
    response.raise_for_status()
    return dict(response.json()) if response.content else {}


class Stack:
    """API (with the webhooks), a send worker, a status worker and beat, started with one set of settings."""

    def __init__(self, settings: Settings, base_environment: dict[str, str], work_directory: Path, name: str) -> None:
        self.settings = settings
        environment = {**base_environment, **settings_to_environment(settings)}
        port = settings.port
        celery = [sys.executable, "-m", "celery", "-A", "worker.app"]
        commands = {
            "api": [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
                    "--threads", "8", "--timeout", "120", "api.wsgi:app"],
            "worker": [*celery, "worker", "--queues", "sms.send,sms.maintenance", "--concurrency", "3",
                       "--loglevel", "WARNING", "--without-mingle", "--without-gossip", "--hostname", f"{name}@%h"],
            "status-worker": [*celery, "worker", "--queues", "sms.status", "--concurrency", "1", "--loglevel",
                              "WARNING", "--without-mingle", "--without-gossip", "--hostname", f"{name}-status@%h"],
            "beat": [*celery, "beat", "--schedule", str(work_directory / f"beat-{name}"), "--loglevel", "WARNING"],
        }  # fmt: skip
        self.processes = [
            ManagedProcess(
                f"{name}-{process}",
                command,
                environment,
                log_path=LOGS / f"pacing-{name}-{process}.log",
                working_directory=REPOSITORY_ROOT,
            ).start()
            for process, command in commands.items()
        ]
        wait_for_port(port)
        time.sleep(3)  # the worker processes finish booting before anything is timed

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def send_broadcast(stack: Stack, engine: Engine, key: str, recipients: list[str], timeout: float) -> dict[str, Any]:
    """POST a broadcast and wait until every recipient has a Twilio outcome; its first/last send times."""
    response = requests.post(
        f"http://127.0.0.1:{stack.settings.port}/v1/broadcasts",
        data=json.dumps({"message": "Hello from bulksms", "recipients": recipients}),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=300,
    )
    if response.status_code != 202:
        raise RuntimeError(f"intake failed: {response.status_code} {response.text[:300]}")
    accepted = response.json()
    started = time.monotonic()
    while True:
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT status, first_send_at, last_send_at FROM broadcasts WHERE id = :id"),
                {"id": accepted["id"]},
            ).one()
        if row.status in ("submitted", "completed"):
            break
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"timed out waiting for broadcast {accepted['id']} (status {row.status})")
        time.sleep(0.5)
    seconds = max((row.last_send_at - row.first_send_at).total_seconds(), 1e-9)
    return {"estimated_seconds": accepted.get("estimated_seconds"), "send_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=int(os.environ.get("BENCH_PACING_RECIPIENTS", "20000")))
    parser.add_argument("--unpaced-recipients", type=int, default=30_000)
    parser.add_argument("--ideal-recipients", type=int, default=30_000)
    arguments = parser.parse_args()

    environment_settings = load_settings(dotenv_path=None)
    work_directory = Path(tempfile.mkdtemp(prefix="bulksms-bench-pacing-"))
    LOGS.mkdir(parents=True, exist_ok=True)
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
            connection.execute(text("DROP DATABASE IF EXISTS bulksms_bench_pacing WITH (FORCE)"))
            connection.execute(text("CREATE DATABASE bulksms_bench_pacing"))
        admin.dispose()
        database_url = make_url(sqlalchemy_url(server_url)).set(database="bulksms_bench_pacing")
        database_url_text = database_url.render_as_string(False)
        upgrade_to_head(database_url_text)
        if environment_settings.redis_url:
            redis_url = environment_settings.redis_url.rsplit("/", 1)[0] + "/13"
        else:
            redis_server = EmbeddedRedis(work_directory / "redis")
            redis_url = redis_server.start()
            embedded.append(redis_server)

        simulator_port = find_free_port()
        simulator_url = f"http://127.0.0.1:{simulator_port}"
        base_environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        processes.append(
            ManagedProcess(
                "simulator",
                [sys.executable, "-m", "bulksms_tools.simulator", "--host", "127.0.0.1", "--port",
                 str(simulator_port), "--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN,
                 "--latency-ms", "100", "--max-concurrency", "100"],
                base_environment,
                log_path=LOGS / "pacing-simulator.log",
                working_directory=REPOSITORY_ROOT,
            ).start()
        )  # fmt: skip
        wait_for_port(simulator_port)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")

        # 1. The ideal sender.
        simulator(simulator_url, "/_simulator/config", {"callbacks_enabled": False})
        ideal_rate = asyncio.run(ideal_sender(simulator_url, arguments.ideal_recipients, 100))
        print(f"ideal sender ({arguments.ideal_recipients:,} messages): {ideal_rate:,.0f} msg/s")

        def settings_for(port: int, rate: str) -> Settings:
            return load_settings(
                {
                    "DATABASE_URL": database_url_text,
                    "REDIS_URL": redis_url,
                    "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
                    "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                    "TWILIO_MESSAGING_SERVICE_SID": MESSAGING_SERVICE_SID,
                    "TWILIO_API_BASE_URL": simulator_url,
                    "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                    "TWILIO_MAX_CONCURRENCY": "100",
                    "TWILIO_SEGMENTS_PER_SECOND": rate,
                    "PORT": str(port),
                    "LOG_LEVEL": "WARNING",
                },
                dotenv_path=None,
            )

        engine = create_database_engine(settings_for(1, "unlimited"))
        session = create_session_factory(engine)()
        _, key = create_api_key(session, "bench")
        session.commit()
        session.close()

        # 2. Paced, with receipts.
        simulator(simulator_url, "/_simulator/reset", {})
        simulator(simulator_url, "/_simulator/config", {"callbacks_enabled": True})
        simulator(simulator_url, "/_simulator/pool", {"senders": POOL})
        paced_stack = Stack(settings_for(find_free_port(), f"{POOL_RATE:g}"), base_environment, work_directory, "paced")
        try:
            paced = send_broadcast(
                paced_stack, engine, key, numbers(arguments.recipients, 1), arguments.recipients / POOL_RATE * 3 + 300
            )
            deadline = time.monotonic() + 600
            while simulator(simulator_url, "/_simulator/pool")["queue_length"] and time.monotonic() < deadline:
                time.sleep(1)
            pool = simulator(simulator_url, "/_simulator/pool")
        finally:
            paced_stack.stop()
        span = pool["last_transmitted_at"] - pool["first_transmitted_at"]
        achieved = (pool["transmitted_segments"] - 1) / span
        print(
            f"paced ({arguments.recipients:,} recipients, pool 20 x 5 = {POOL_RATE:g} segments/s, "
            f"TWILIO_SEGMENTS_PER_SECOND={POOL_RATE:g}): {achieved:.1f} segments/s transmitted, "
            f"ratio {achieved / POOL_RATE:.3f}; Twilio queue peak {pool['queue_peak_seconds']:.1f} s "
            f"({pool['queue_peak_segments']} segments; bound TWILIO_QUEUE_MAX_SECONDS=60); "
            f"estimate at intake {paced['estimated_seconds']} s, sending took {paced['send_seconds']:.0f} s"
        )

        # 3. Unpaced, no receipts: what pacing must not cost when it is off.
        simulator(simulator_url, "/_simulator/reset", {})
        simulator(simulator_url, "/_simulator/config", {"callbacks_enabled": False})
        simulator(simulator_url, "/_simulator/pool", {"senders": []})
        unpaced_stack = Stack(settings_for(find_free_port(), "unlimited"), base_environment, work_directory, "unpaced")
        try:
            unpaced = send_broadcast(unpaced_stack, engine, key, numbers(arguments.unpaced_recipients, 2), 900)
        finally:
            unpaced_stack.stop()
        summary = simulator(simulator_url, "/_simulator/summary")
        unpaced_rate = arguments.unpaced_recipients / unpaced["send_seconds"]
        print(
            f"unpaced ({arguments.unpaced_recipients:,} recipients): {unpaced_rate:,.0f} msg/s first to last send, "
            f"ratio to the ideal sender {unpaced_rate / ideal_rate:.2f} (target >= 0.90); "
            f"duplicates {summary['duplicate_count']}"
        )
        engine.dispose()
        results = {
            "paced_recipients": arguments.recipients,
            "configured_segments_per_second": POOL_RATE,
            "achieved_segments_per_second": round(achieved, 2),
            "achieved_over_configured": round(achieved / POOL_RATE, 4),
            "twilio_queue_peak_seconds": pool["queue_peak_seconds"],
            "twilio_queue_peak_segments": pool["queue_peak_segments"],
            "paced_failed_by_code": pool["failed_by_code"],
            "estimated_seconds_at_intake": paced["estimated_seconds"],
            "paced_send_seconds": round(paced["send_seconds"], 1),
            "ideal_msgs_per_second": round(ideal_rate),
            "unpaced_recipients": arguments.unpaced_recipients,
            "unpaced_msgs_per_second": round(unpaced_rate),
            "unpaced_over_ideal": round(unpaced_rate / ideal_rate, 3),
        }
        results_directory = REPOSITORY_ROOT / "bench" / "results"
        results_directory.mkdir(exist_ok=True)
        (results_directory / "pacing.json").write_text(json.dumps(results, indent=2))
    finally:
        for process in reversed(processes):
            process.stop()
        for server in reversed(embedded):
            server.stop()


if __name__ == "__main__":
    main()
