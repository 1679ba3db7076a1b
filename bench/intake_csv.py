"""CSV intake benchmark: POST a 1,000,000-row CSV (`text/csv`) to the real API (gunicorn), time the 202.

Not a test: run it on purpose, `python bench/intake_csv.py [--rows N] [--template]`. Same servers as
`bench/intake.py` (DATABASE_URL / REDIS_URL when set, embedded otherwise). The CSV has `phone,first_name`, the
numbers those of `bench/intake.py`'s clean E.164 list (numbers in an area code no one has, such as +1 200, take
libphonenumber's slower path, every North American region tried: about twice the time);
with `--template` the message uses `{first_name}`, so every row carries variables, else the column is ignored
and the plain path is used. Prints the time to the 202 and the API worker's peak RSS. Target: accepted with
the API under 1 GiB.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import redis
import requests
from sqlalchemy import func, select

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY_ROOT))

from bench.intake import GUNICORN_OPTIONS, TARGET_PEAK_BYTES, clean_number, fresh_database, peak_rss_bytes  # noqa: E402
from bulksms_tools.local_services import (  # noqa: E402
    EmbeddedPostgres,
    EmbeddedRedis,
    ManagedProcess,
    find_free_port,
    remove_directory,
    wait_for_port,
)
from shared.platform.api_keys import create_api_key  # noqa: E402
from shared.platform.db import create_database_engine, create_session_factory  # noqa: E402
from shared.platform.migrate import upgrade_to_head  # noqa: E402
from shared.platform.models import Message  # noqa: E402
from shared.platform.settings import load_settings, settings_to_environment  # noqa: E402


def csv_body(rows: int) -> bytes:
    lines = ["phone,first_name"]
    lines.extend(f"{clean_number(index)},Voter{index % 5000}" for index in range(rows))
    return ("\r\n".join(lines) + "\r\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--template", action="store_true", help="message uses {first_name}: every row has vars")
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
        body = csv_body(arguments.rows)
        message = "Hi {first_name}, polls close at 10pm." if arguments.template else "Polls close at 10pm."
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).raise_for_status()
        assert api.process is not None
        workers = psutil.Process(api.process.pid).children(recursive=True)
        idle = max(peak_rss_bytes(process.pid) for process in workers)

        started = time.perf_counter()
        response = requests.post(
            f"http://127.0.0.1:{port}/v1/broadcasts",
            params={"message": message},
            data=body,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "text/csv"},
            timeout=300,
        )
        intake_seconds = time.perf_counter() - started
        if response.status_code != 202:
            raise SystemExit(f"expected 202, got {response.status_code}: {response.text[:500]}")
        accepted = response.json()
        peak = max(peak_rss_bytes(process.pid) for process in workers)
        with create_session_factory(engine)() as session:
            stored = session.scalar(
                select(func.count()).select_from(Message).where(Message.broadcast_id == accepted["id"])
            )

        print(f"body:                {len(body) / 1e6:.1f} MB CSV, {arguments.rows:,} rows")
        print(f"message:             {message!r} ({'template' if arguments.template else 'plain'})")
        print(f"time to 202:         {intake_seconds:.2f} s")
        print(f"API worker RSS:      {idle / 2**20:.0f} MiB idle, {peak / 2**20:.0f} MiB peak")
        print(f"stored messages:     {stored:,}")
        for line in (work_directory / "api.log").read_text().splitlines():
            if "accepted in" in line or "stored:" in line:
                print("API log:", line.split(": ", 1)[-1])
        print(f"target (< 1 GiB): {'met' if peak < TARGET_PEAK_BYTES else 'NOT met'}")
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
