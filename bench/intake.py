"""Intake benchmark: POST one 1,000,000-recipient broadcast to the real API (gunicorn), time the 202.

Not a test: run it on purpose, `python bench/intake.py [--recipients N]`. It uses DATABASE_URL / REDIS_URL
when set (a fresh `bulksms_bench` database, Redis database 14, flushed), embedded servers otherwise. Prints
the time to the 202, the API worker's peak RSS, and a baseline measured in the same run: `json.loads` of the
same body. Target: 1,000,000 recipients accepted in at most 10 s with the API under 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import redis
import requests
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY_ROOT))

from bulksms_tools.local_services import (  # noqa: E402
    EmbeddedPostgres,
    EmbeddedRedis,
    ManagedProcess,
    find_free_port,
    remove_directory,
    wait_for_port,
)
from shared.platform.api_keys import create_api_key  # noqa: E402
from shared.platform.db import create_database_engine, create_session_factory, sqlalchemy_url  # noqa: E402
from shared.platform.migrate import upgrade_to_head  # noqa: E402
from shared.platform.models import Message  # noqa: E402
from shared.platform.settings import load_settings, settings_to_environment  # noqa: E402
from shared.platform.task_queue import SEND_QUEUE  # noqa: E402

TARGET_SECONDS = 10.0
TARGET_PEAK_BYTES = 1 << 30
GUNICORN_OPTIONS = ("--workers", "1", "--timeout", "120")


def fresh_database(server_url: str) -> str:
    admin = create_engine(sqlalchemy_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text('DROP DATABASE IF EXISTS "bulksms_bench" WITH (FORCE)'))
        connection.execute(text('CREATE DATABASE "bulksms_bench"'))
    admin.dispose()
    url = make_url(sqlalchemy_url(server_url)).set(database="bulksms_bench")
    return url.render_as_string(hide_password=False)


def peak_rss_bytes(pid: int) -> int:
    """VmHWM (the high-water mark of resident memory) of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    arguments = parser.parse_args()

    environment_settings = load_settings(dotenv_path=None)
    work_directory = Path(tempfile.mkdtemp(prefix="bulksms-bench-"))
    postgres = redis_server = None
    if environment_settings.database_url:
        database_url = fresh_database(environment_settings.database_url)
    else:
        postgres = EmbeddedPostgres(work_directory / "postgres")
        database_url = fresh_database(postgres.start())
    if environment_settings.redis_url:
        parts = urlsplit(environment_settings.redis_url)
        redis_url = urlunsplit((parts.scheme, parts.netloc, "/14", parts.query, parts.fragment))
    else:
        redis_server = EmbeddedRedis(work_directory / "redis")
        redis_url = redis_server.start()
    upgrade_to_head(database_url)
    settings = load_settings({"DATABASE_URL": database_url, "REDIS_URL": redis_url}, dotenv_path=None)
    broker = redis.Redis.from_url(redis_url)
    broker.flushdb()
    engine = create_database_engine(settings)
    with create_session_factory(engine)() as session:
        _, api_key = create_api_key(session, "bench")

    port = find_free_port()
    api = ManagedProcess(
        "api",
        [sys.executable, "-m", "gunicorn", "api.wsgi:app", "--bind", f"127.0.0.1:{port}", *GUNICORN_OPTIONS],
        {**os.environ, **settings_to_environment(settings)},
        log_path=work_directory / "api.log",
        working_directory=REPOSITORY_ROOT,
    ).start()
    try:
        wait_for_port(port)
        numbers = [f"+1{2000000000 + index * 7:010d}" for index in range(arguments.recipients)]
        body = json.dumps({"message": "Polling stations are open until 10pm today.", "recipients": numbers})
        encoded = body.encode()
        del numbers

        started = time.perf_counter()
        json.loads(encoded)
        baseline_seconds = time.perf_counter() - started

        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).raise_for_status()  # the worker is up
        started = time.perf_counter()
        response = requests.post(
            f"http://127.0.0.1:{port}/v1/broadcasts",
            data=encoded,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            timeout=300,
        )
        intake_seconds = time.perf_counter() - started
        if response.status_code != 202:
            raise SystemExit(f"expected 202, got {response.status_code}: {response.text[:500]}")
        accepted = response.json()

        assert api.process is not None
        workers = psutil.Process(api.process.pid).children(recursive=True)
        peak = max(peak_rss_bytes(process.pid) for process in workers)
        with create_session_factory(engine)() as session:
            stored = session.scalar(
                select(func.count()).select_from(Message).where(Message.broadcast_id == accepted["id"])
            )
        queued = broker.llen(SEND_QUEUE)

        print(f"body:                {len(encoded) / 1e6:.1f} MB, {arguments.recipients:,} recipients")
        print(f"baseline json.loads: {baseline_seconds:.2f} s")
        ratio = intake_seconds / baseline_seconds
        print(f"time to 202:         {intake_seconds:.2f} s  ({ratio:.0f}x baseline)")
        print(f"API worker peak RSS: {peak / 2**20:.0f} MiB")
        print(f"stored messages:     {stored:,}")
        print(f"chunk tasks queued:  {queued:,} (chunks: {accepted['chunks']:,})")
        verdict = intake_seconds <= TARGET_SECONDS and peak < TARGET_PEAK_BYTES
        for line in (work_directory / "api.log").read_text().splitlines():
            if "accepted in" in line or "stored:" in line:
                print("API log:", line.split(": ", 1)[-1])
        print(f"target (<= {TARGET_SECONDS:.0f} s, < 1 GiB): {'met' if verdict else 'NOT met'}")
    finally:
        api.stop()
        broker.flushdb()
        broker.close()
        engine.dispose()
        if redis_server is not None:
            redis_server.stop()
        if postgres is not None:
            postgres.stop()
        remove_directory(work_directory)


if __name__ == "__main__":
    main()
