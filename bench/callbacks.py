"""Status callbacks: accepted per second by the webhook (and its p99), applied per second by the consumers.

A loopback load generator (asyncio + aiohttp, 64 keep-alive connections, every request signed beforehand like
Twilio signs it) posts `--callbacks` callbacks (`sent` then `delivered` for `--callbacks / 2` messages) to the
webhook service under gunicorn, then the same number of requests to a bare Flask endpoint that only answers 204
under the same gunicorn setup: the ratio is the figure that matters on a noisy machine. Then a Celery worker on
`sms.status` (with beat) applies the queued backlog to PostgreSQL, and the applied rate is read from the
`status_events` timestamps.

    python bench/callbacks.py --callbacks 100000

Not a test: it prints figures; docs/receipts.md records the latest ones.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import redis
from flask import Flask, Response
from sqlalchemy import create_engine, text

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY_ROOT))

from shared.db import create_database_engine, sqlalchemy_url  # noqa: E402
from shared.local_services import (  # noqa: E402
    EmbeddedPostgres,
    EmbeddedRedis,
    ManagedProcess,
    find_free_port,
    wait_for_port,
)
from shared.migrate import upgrade_to_head  # noqa: E402
from shared.settings import load_settings, settings_to_environment  # noqa: E402
from shared.status_queue import STREAM_KEY  # noqa: E402

ACCOUNT_SID = "AC" + "be" * 16
AUTH_TOKEN = "bench-auth-token"
MESSAGING_SERVICE_SID = "MG" + "cd" * 16
CALLBACK_PATH = "/webhooks/twilio/status"


def create_bare_app() -> Flask:
    """The baseline: the same framework and server, answering 204 without reading anything."""
    app = Flask("bare")

    @app.post(CALLBACK_PATH)
    def bare() -> Response:
        return Response(status=204)

    return app


def sign(url: str, parameters: dict[str, str]) -> str:
    data = url + "".join(name + parameters[name] for name in sorted(parameters))
    return base64.b64encode(hmac.new(AUTH_TOKEN.encode(), data.encode(), hashlib.sha1).digest()).decode()


def signed_requests(public_base_url: str, messages: list[tuple[int, str, str]]) -> list[tuple[str, bytes, str]]:
    """(path with query, form body, signature) per callback: `sent` for every message, then `delivered`."""
    prepared = []
    for status in ("sent", "delivered"):
        for message_id, sid, number in messages:
            query = f"message_id={message_id}&attempt=1"
            parameters = {
                "MessageSid": sid,
                "SmsSid": sid,
                "MessageStatus": status,
                "SmsStatus": status,
                "AccountSid": ACCOUNT_SID,
                "MessagingServiceSid": MESSAGING_SERVICE_SID,
                "From": "+15005550006",
                "To": number,
                "ApiVersion": "2010-04-01",
            }
            if status == "delivered":
                parameters["RawDlrDoneDate"] = "2611291200"
            path = f"{CALLBACK_PATH}?{query}"
            prepared.append((path, urlencode(parameters).encode(), sign(f"{public_base_url}{path}", parameters)))
    return prepared


async def load(base_url: str, prepared: list[tuple[str, bytes, str]], connections: int) -> dict[str, Any]:
    """Post every prepared request with `connections` in flight; rate, latency percentiles, status counts."""
    pending = iter(prepared)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def client(session: aiohttp.ClientSession) -> None:
        for path, body, signature in pending:
            headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
            started = time.perf_counter()
            async with session.post(base_url + path, data=body, headers=headers) as response:
                await response.read()
            latencies.append(time.perf_counter() - started)
            statuses[response.status] = statuses.get(response.status, 0) + 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "per_second": round(len(latencies) / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "statuses": statuses,
    }


def gunicorn(name: str, app: str, port: int, arguments: argparse.Namespace, environment: dict[str, str]) -> Any:
    command = [
        sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(arguments.workers),
        "--worker-class", arguments.worker_class, "--threads", str(arguments.threads),
        "--keep-alive", "30", "--backlog", "2048", "--pythonpath", str(REPOSITORY_ROOT / "bench"), app,
    ]  # fmt: skip
    return ManagedProcess(
        name, command, environment, log_path=REPOSITORY_ROOT / ".bulksms" / "bench-logs" / f"{name}.log"
    ).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callbacks", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--worker-class", default="gthread")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--consumer-processes", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--timeout-seconds", type=float, default=900)
    parser.add_argument("--accept-only", action="store_true", help="measure the webhook only (no consumer run)")
    arguments = parser.parse_args()
    message_count = arguments.callbacks // 2

    environment_settings = load_settings(dotenv_path=None)
    work_directory = Path(tempfile.mkdtemp(prefix="bulksms-bench-callbacks-"))
    (REPOSITORY_ROOT / ".bulksms" / "bench-logs").mkdir(parents=True, exist_ok=True)
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
            connection.execute(text("DROP DATABASE IF EXISTS bulksms_bench_callbacks WITH (FORCE)"))
            connection.execute(text("CREATE DATABASE bulksms_bench_callbacks"))
        admin.dispose()
        from sqlalchemy.engine import make_url

        database_url = (
            make_url(sqlalchemy_url(server_url)).set(database="bulksms_bench_callbacks").render_as_string(False)
        )
        upgrade_to_head(database_url)
        if environment_settings.redis_url:
            redis_url = environment_settings.redis_url.rsplit("/", 1)[0] + "/13"
        else:
            redis_server = EmbeddedRedis(work_directory / "redis")
            redis_url = redis_server.start()
            embedded.append(redis_server)
        redis_client = redis.Redis.from_url(redis_url)
        redis_client.flushdb()

        webhook_port, bare_port = find_free_port(), find_free_port()
        public_base_url = f"http://127.0.0.1:{webhook_port}"
        settings = load_settings(
            {
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "TWILIO_MESSAGING_SERVICE_SID": MESSAGING_SERVICE_SID,
                "TWILIO_API_BASE_URL": "http://127.0.0.1:9",
                "PUBLIC_BASE_URL": public_base_url,
                "STATUS_BATCH_SIZE": str(arguments.batch_size),
                "LOG_LEVEL": "WARNING",
            },
            dotenv_path=None,
        )
        base_environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        environment = {**base_environment, **settings_to_environment(settings)}

        # The messages the callbacks are about: accepted by Twilio, SIDs recorded.
        engine = create_database_engine(settings)
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO api_keys (name, prefix, secret_hash) VALUES ('bench', 'bench', repeat('0', 64))")
            )
            broadcast_id = connection.execute(
                text(
                    "INSERT INTO broadcasts (id, api_key_id, body, status, encoding, characters, segments, "
                    "recipients_received, recipients_accepted, recipients_duplicates, recipients_invalid, "
                    "invalid_sample, chunk_size, chunk_count) SELECT gen_random_uuid(), id, 'Hello', 'submitted', "
                    "'GSM-7', 5, 1, :n, :n, 0, 0, '[]', 100, :chunks FROM api_keys RETURNING id"
                ),
                {"n": message_count, "chunks": -(-message_count // 100)},
            ).scalar_one()
            messages = [
                (row.id, row.twilio_sid, row.to_number)
                for row in connection.execute(
                    text(
                        "INSERT INTO messages (broadcast_id, chunk_number, to_number, state, attempts, twilio_sid, "
                        "twilio_status, sent_at) SELECT :b, i / 100, '+1555' || lpad(i::text, 7, '0'), 'accepted', "
                        "1, 'SM' || md5(i::text), 'accepted', now() FROM generate_series(0, :n - 1) AS i "
                        "RETURNING id, twilio_sid, to_number"
                    ),
                    {"b": broadcast_id, "n": message_count},
                )
            ]
        prepared = signed_requests(public_base_url, messages)

        processes.append(gunicorn("webhook", "api.webhook_wsgi:app", webhook_port, arguments, environment))
        processes.append(gunicorn("bare", "callbacks:create_bare_app()", bare_port, arguments, environment))
        wait_for_port(webhook_port)
        wait_for_port(bare_port)
        time.sleep(2)

        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(
            f"gunicorn: {arguments.workers} x {arguments.worker_class}, {arguments.threads} threads; "
            f"load: {arguments.connections} connections, {len(prepared):,} callbacks"
        )
        warm_up = prepared[: min(2000, len(prepared))]
        asyncio.run(load(f"http://127.0.0.1:{bare_port}", warm_up, arguments.connections))
        bare = asyncio.run(load(f"http://127.0.0.1:{bare_port}", prepared, arguments.connections))
        print(f"bare 204 endpoint:  {bare}")
        webhook = asyncio.run(load(public_base_url, prepared, arguments.connections))
        print(f"webhook (accepted): {webhook}")
        queued = redis_client.xlen(STREAM_KEY)
        if webhook["statuses"] != {204: len(prepared)} or queued != len(prepared):
            raise RuntimeError(f"webhook: not every callback was accepted and queued ({queued} queued)")
        for process in processes:
            process.stop()
        processes.clear()
        if arguments.accept_only:
            return

        # Apply the backlog: a Celery worker on sms.status and beat, as in production.
        processes.append(
            ManagedProcess(
                "status-worker",
                [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--queues", "sms.status",
                 "--concurrency", str(arguments.consumer_processes), "--loglevel", "WARNING",
                 "--without-mingle", "--without-gossip"],
                environment,
                log_path=REPOSITORY_ROOT / ".bulksms" / "bench-logs" / "status-worker.log",
                working_directory=REPOSITORY_ROOT,
            ).start()
        )  # fmt: skip
        processes.append(
            ManagedProcess(
                "beat",
                [sys.executable, "-m", "celery", "-A", "worker.app", "beat", "--schedule",
                 str(work_directory / "beat-schedule"), "--loglevel", "WARNING"],
                environment,
                log_path=REPOSITORY_ROOT / ".bulksms" / "bench-logs" / "beat.log",
                working_directory=REPOSITORY_ROOT,
            ).start()
        )  # fmt: skip
        started = time.monotonic()
        while redis_client.xlen(STREAM_KEY) > 0:
            if time.monotonic() - started > arguments.timeout_seconds:
                raise RuntimeError("timed out waiting for the consumers")
            time.sleep(0.5)
        with engine.connect() as connection:
            first_stored, last_applied, events, unapplied = connection.execute(
                text(
                    "SELECT min(stored_at), max(applied_at), count(*), count(*) FILTER (WHERE applied_at IS NULL) "
                    "FROM status_events"
                )
            ).one()
            states = dict(
                connection.execute(text("SELECT state, count(*) FROM messages GROUP BY state")).all()  # type: ignore[arg-type]
            )
        engine.dispose()
        applied_rate = events / max((last_applied - first_stored).total_seconds(), 1e-9)
        results = {
            "callbacks": len(prepared),
            "webhook_accepted_per_second": webhook["per_second"],
            "webhook_p99_ms": webhook["p99_ms"],
            "bare_per_second": bare["per_second"],
            "bare_p99_ms": bare["p99_ms"],
            "ratio_webhook_to_bare": round(webhook["per_second"] / bare["per_second"], 3),
            "applied_per_second": round(applied_rate),
            "status_events": events,
            "unapplied": unapplied,
            "message_states": states,
        }
        print(json.dumps(results, indent=2, default=str))
        if events != len(prepared) or states != {"delivered": message_count}:
            raise RuntimeError("consumer: not every callback was applied exactly once")
    finally:
        for process in reversed(processes):
            process.stop()
        for server in reversed(embedded):
            server.stop()


if __name__ == "__main__":
    main()
