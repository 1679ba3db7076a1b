"""Intake benchmark: POST 1,000,000-recipient broadcasts to the real API (gunicorn), time each 202.

Not a test: run it on purpose, `python bench/intake.py [--recipients N] [--lists e164,national,template]`. It uses
DATABASE_URL / REDIS_URL when set (a fresh `bulksms_bench` database, Redis database 14, flushed), embedded servers
otherwise. Three lists, each posted to a freshly started API worker (so its peak memory is that list's) on emptied
tables:

- `e164`: clean E.164 numbers, all valid (half North American, then British, German and French mobiles);
- `national`: British mobiles as people write them (`07712 345678`, `(07712) 345-678`, `+44 (0)7712 345678`,
  `0044 7712 345678`, ...), read with `default_region: GB`;
- `template`: the `e164` numbers as `{"to", "vars"}` objects with two variables, for a two-placeholder message.

For each it prints the time to the 202, the API worker's peak RSS, the load average when it was posted, and a
baseline measured in the same run: `json.loads` of the same body, with the cyclic collector paused as the API
pauses it. A first list of 20,000 numbers, not reported, warms PostgreSQL up. Targets: the E.164 list in at most
10 s with the API under 1 GiB; the national list and the template in at most 20 s.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import redis
import requests
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine, make_url

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
from shared.platform.settings import Settings, load_settings, settings_to_environment  # noqa: E402
from shared.platform.task_queue import SEND_QUEUE  # noqa: E402

TARGET_PEAK_BYTES = 1 << 30
GUNICORN_OPTIONS = ("--workers", "1", "--timeout", "300")
FIRST_NAMES = [
    "Ann",
    "Bob",
    "Chidi",
    "Dolores",
    "Eleanor",
    "Fatima",
    "Gustav",
    "Hiroko",
    "Ines",
    "Jamal",
    "Kofi",
    "Lena",
    "Mateo",
    "Nadia",
    "Oskar",
    "Priya",
    "Quentin",
    "Rosa",
    "Sven",
    "Tomasz",
    "Ugo",
    "Valentina",
    "Wei",
    "Ximena",
    "Yusuf",
    "Zofia",
]
WARDS = ("St Mary's", "Town", "Riverside", "Oakfield", "Hillcrest")


def clean_number(index: int) -> str:
    """A distinct valid E.164 number per index: 10 in 20 North American, 4 British, 3 German, 3 French."""
    share = index % 20
    if share < 10:
        return f"+1202{2 + index % 8}{(index // 8) % 100:02d}{(index // 800) % 10000:04d}"
    if share < 14:
        return f"+4477{1 + index % 7}{(index // 7) % 10_000_000:07d}"
    if share < 17:
        return f"+49151{index % 100_000_000:08d}"
    return f"+336{index % 100_000_000:08d}"


def british_mobile_as_written(index: int) -> str:
    """A distinct British mobile per index, in one of eight ways people write one."""
    national = f"77{1 + index % 7}{(index // 7) % 10_000_000:07d}"  # ten digits after +44
    area, rest = national[:4], national[4:]
    return (
        f"0{area} {rest}",
        f"0{area}-{rest[:3]}-{rest[3:]}",
        f"(0{area}) {rest}",
        f"+44 (0){area} {rest}",
        f"0044 {area} {rest}",
        f"+44 {area} {rest}",
        f"0{national}",
        f"0{area}.{rest[:3]}.{rest[3:]}",
    )[index % 8]


@dataclass(frozen=True)
class RecipientList:
    name: str
    what: str
    target_seconds: float
    body: Callable[[int], dict[str, Any]]


LISTS = {
    "e164": RecipientList(
        "e164",
        "clean E.164",
        10.0,
        lambda count: {
            "message": "Polling stations are open until 10pm today.",
            "recipients": [clean_number(index) for index in range(count)],
        },
    ),
    "national": RecipientList(
        "national",
        "national formats, default_region GB",
        20.0,
        lambda count: {
            "message": "Polling stations are open until 10pm today.",
            "recipients": [british_mobile_as_written(index) for index in range(count)],
            "default_region": "GB",
        },
    ),
    "template": RecipientList(
        "template",
        "template, two variables",
        20.0,
        lambda count: {
            "message": "Hi {name}, polling stations in {ward} ward are open until 10pm today.",
            "recipients": [
                {"to": clean_number(index), "vars": {"name": FIRST_NAMES[index % 26], "ward": WARDS[index % 5]}}
                for index in range(count)
            ],
        },
    ),
}


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


@dataclass(frozen=True)
class Figures:
    name: str
    load_average: float
    body_bytes: int
    baseline_seconds: float
    intake_seconds: float
    peak_bytes: int
    stored: int
    accepted: dict[str, Any]
    target_seconds: float

    @property
    def met(self) -> bool:
        return self.intake_seconds <= self.target_seconds and self.peak_bytes < TARGET_PEAK_BYTES


def run_list(
    recipient_list: RecipientList,
    count: int,
    settings: Settings,
    engine: Engine,
    broker: redis.Redis,
    work_directory: Path,
    quiet: bool = False,
) -> Figures:
    """Post one list to a new API worker on emptied tables and measure it."""
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE messages, broadcasts CASCADE"))
    broker.flushdb()
    with create_session_factory(engine)() as session:
        _, api_key = create_api_key(session, f"bench-{recipient_list.name}")
    # Compact, as clients send it: a million template recipients then fit the default MAX_REQUEST_BYTES.
    encoded = json.dumps(recipient_list.body(count), separators=(",", ":")).encode()
    # The API parses with Python's cyclic collector paused (api/broadcasts.py); so does the baseline.
    gc.disable()
    started = time.perf_counter()
    json.loads(encoded)
    baseline_seconds = time.perf_counter() - started
    gc.enable()
    load_before = os.getloadavg()[0]

    port = find_free_port()
    log_path = work_directory / f"api-{recipient_list.name}-{count}{'-warm-up' if quiet else ''}.log"
    api = ManagedProcess(
        "api",
        [sys.executable, "-m", "gunicorn", "api.wsgi:app", "--bind", f"127.0.0.1:{port}", *GUNICORN_OPTIONS],
        {**os.environ, **settings_to_environment(settings)},
        log_path=log_path,
        working_directory=REPOSITORY_ROOT,
    ).start()
    try:
        wait_for_port(port)
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).raise_for_status()  # the worker is up
        started = time.perf_counter()
        response = requests.post(
            f"http://127.0.0.1:{port}/v1/broadcasts",
            data=encoded,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            timeout=600,
        )
        intake_seconds = time.perf_counter() - started
        if response.status_code != 202:
            raise SystemExit(f"{recipient_list.name}: expected 202, got {response.status_code}: {response.text[:500]}")
        accepted = response.json()
        assert api.process is not None
        workers = psutil.Process(api.process.pid).children(recursive=True)
        peak = max(peak_rss_bytes(process.pid) for process in workers)
    finally:
        api.stop()
    with create_session_factory(engine)() as session:
        stored = session.scalar(select(func.count()).select_from(Message).where(Message.broadcast_id == accepted["id"]))
    figures = Figures(
        recipient_list.name,
        load_before,
        len(encoded),
        baseline_seconds,
        intake_seconds,
        peak,
        stored or 0,
        accepted,
        recipient_list.target_seconds,
    )
    if quiet:
        return figures
    print(f"== {recipient_list.name}: {recipient_list.what} (load average {load_before:.1f} when posted)")
    print(f"body:                {len(encoded) / 1e6:.1f} MB, {count:,} recipients")
    print(f"baseline json.loads: {baseline_seconds:.2f} s")
    print(f"time to 202:         {intake_seconds:.2f} s  ({intake_seconds / baseline_seconds:.0f}x baseline)")
    print(f"API worker peak RSS: {peak / 2**20:.0f} MiB")
    recipients = accepted["recipients"]
    print(
        f"accepted:            {recipients['accepted']:,} ({recipients['duplicates']:,} duplicates, "
        f"{recipients['invalid']:,} invalid, {recipients['not_valid']:,} not valid), by country "
        f"{recipients['by_country']}"
    )
    print(f"stored messages:     {figures.stored:,}")
    # Only the first window of chunks is published (shared.sending.windows); finishing chunks release the rest.
    print(f"chunk tasks queued:  {broker.llen(SEND_QUEUE):,} (chunks: {accepted['chunks']:,}, the first window)")
    for line in log_path.read_text().splitlines():
        if "accepted in" in line or "stored:" in line:
            print("API log:", json.loads(line).get("message", line) if line.startswith("{") else line)
    verdict = "met" if figures.met else "NOT met"
    print(f"target (<= {recipient_list.target_seconds:.0f} s, < 1 GiB): {verdict}\n")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--lists", default=",".join(LISTS), help=f"comma-separated, of: {', '.join(LISTS)}")
    arguments = parser.parse_args()
    chosen = [LISTS[name.strip()] for name in arguments.lists.split(",") if name.strip()]

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
    engine = create_database_engine(settings)
    try:
        # A first, small list warms PostgreSQL and the page cache up, so the first measured list is not penalised.
        run_list(LISTS["e164"], 20_000, settings, engine, broker, work_directory, quiet=True)
        results = [
            run_list(chosen_list, arguments.recipients, settings, engine, broker, work_directory)
            for chosen_list in chosen
        ]
        print("| list | load avg | body | baseline json.loads | time to 202 | API peak RSS | target |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for figures in results:
            print(
                f"| {figures.name} | {figures.load_average:.1f} | {figures.body_bytes / 1e6:.0f} MB | "
                f"{figures.baseline_seconds:.2f} s | "
                f"{figures.intake_seconds:.1f} s | {figures.peak_bytes / 2**20:.0f} MiB | "
                f"{'met' if figures.met else 'NOT met'} (≤ {figures.target_seconds:.0f} s) |"
            )
    finally:
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
