"""Status callbacks: accepted per second by the webhook (and its p99), applied per second by the consumers.

A loopback load generator (`wrk -t2 -c64` with bench/callbacks_wrk.lua when wrk is installed, else asyncio +
aiohttp with 64 keep-alive connections; every request signed beforehand like Twilio signs it) posts
`--callbacks` callbacks (`sent` then `delivered` for `--callbacks / 2` messages) to the webhook service under
gunicorn, then the same number of requests to a bare Flask endpoint that only answers 204
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
import re
import shutil
import signal
import statistics
import subprocess
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

from bulksms_tools.local_services import (  # noqa: E402
    EmbeddedPostgres,
    EmbeddedRedis,
    ManagedProcess,
    find_free_port,
    wait_for_port,
)
from shared.platform.db import create_database_engine, sqlalchemy_url  # noqa: E402
from shared.platform.migrate import upgrade_to_head  # noqa: E402
from shared.platform.settings import load_settings, settings_to_environment  # noqa: E402
from shared.receipts.status_queue import STREAM_KEY  # noqa: E402

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


def write_request_file(path: Path, prepared: list[tuple[str, bytes, str]]) -> Path:
    """The callbacks for the wrk script, one per line: path with query, signature, form body (tab-separated)."""
    with path.open("w") as file:
        for request_path, body, signature in prepared:
            file.write(f"{request_path}\t{signature}\t{body.decode()}\n")
    return path


def wrk_load(base_url: str, requests_file: Path, connections: int, threads: int) -> dict[str, Any]:
    """Post every request of `requests_file` once with wrk; the script reports the wall-clock rate and statuses
    (wrk itself only stops on its duration: SIGINT once every thread has had all its answers)."""
    marker = requests_file.with_suffix(".done")
    for thread in range(1, threads + 1):
        Path(f"{marker}.{thread}").unlink(missing_ok=True)
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", "-d300s", "--timeout", "10s", "--latency",
        "-s", str(REPOSITORY_ROOT / "bench" / "callbacks_wrk.lua"), base_url,
        "--", str(requests_file), str(threads), str(marker),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while not all(Path(f"{marker}.{thread}").exists() for thread in range(1, threads + 1)):
        if process.poll() is not None:
            break
        time.sleep(0.05)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    found = re.search(r"^BENCH_RESULT (.*)$", output, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"wrk gave no result:\n{output}")
    result = json.loads(found.group(1))
    # wrk's own --latency distribution (it also counts the few 404 fillers sent while the last answers arrive)
    percentile = re.search(r"^\s+99%\s+(\S+)$", output, re.MULTILINE)
    return {
        "requests": result["answered"],
        "per_second": round(result["answered"] / result["seconds"]),
        "p50_ms": round(result["p50_ms"], 2),
        "p99_ms": round(result["p99_ms"], 2),
        "wrk_p99": percentile.group(1) if percentile else None,
        "statuses": {int(status): number for status, number in result["statuses"].items()},
    }


def gunicorn(name: str, app: str, port: int, arguments: argparse.Namespace, environment: dict[str, str]) -> Any:
    command = [
        sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(arguments.workers),
        "--worker-class", arguments.worker_class, "--threads", str(arguments.threads),
        "--keep-alive", str(arguments.keep_alive), "--backlog", "2048",
        "--pythonpath", str(REPOSITORY_ROOT / "bench"), app,
    ]  # fmt: skip
    return ManagedProcess(
        name, command, environment, log_path=REPOSITORY_ROOT / ".bulksms" / "bench-logs" / f"{name}.log"
    ).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callbacks", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--worker-class", default="gthread")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--consumer-processes", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--timeout-seconds", type=float, default=900)
    parser.add_argument("--generator", choices=("auto", "wrk", "aiohttp"), default="auto")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--keep-alive", type=int, default=30, help="gunicorn --keep-alive seconds")
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

        generator = arguments.generator
        if generator == "auto":
            generator = "wrk" if shutil.which("wrk") else "aiohttp"
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"load average at start: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
        print(
            f"gunicorn: {arguments.workers} x {arguments.worker_class}, {arguments.threads} threads, keep-alive "
            f"{arguments.keep_alive} s; load generator: {generator}, {arguments.connections} connections"
            + (f", {arguments.wrk_threads} threads" if generator == "wrk" else "")
            + f", {len(prepared):,} callbacks"
        )
        if generator == "wrk":
            requests_file = write_request_file(work_directory / "callbacks.requests", prepared)
            warm_up_file = write_request_file(work_directory / "warm-up.requests", prepared[: min(2000, len(prepared))])

            def run(base_url: str, path: Path) -> dict[str, Any]:
                return wrk_load(base_url, path, arguments.connections, arguments.wrk_threads)

            run(f"http://127.0.0.1:{bare_port}", warm_up_file)
            bare = run(f"http://127.0.0.1:{bare_port}", requests_file)
            print(f"bare 204 endpoint:  {bare}")
            webhook = run(public_base_url, requests_file)
        else:
            warm_up = prepared[: min(2000, len(prepared))]
            asyncio.run(load(f"http://127.0.0.1:{bare_port}", warm_up, arguments.connections))
            bare = asyncio.run(load(f"http://127.0.0.1:{bare_port}", prepared, arguments.connections))
            print(f"bare 204 endpoint:  {bare}")
            webhook = asyncio.run(load(public_base_url, prepared, arguments.connections))
        print(f"webhook (accepted): {webhook}")
        print(f"load average after: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
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
            "generator": generator,
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
