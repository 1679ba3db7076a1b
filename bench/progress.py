"""Progress benchmark: time `GET /v1/broadcasts/{id}` on a 1,000,000-recipient broadcast in mixed states.

Not a test: run it on purpose, `python bench/progress.py [--recipients N]`. It uses DATABASE_URL when set (a fresh
`bulksms_bench_progress` database), an embedded PostgreSQL otherwise. The recipients are stored by the real intake
(`shared.broadcasts.intake.create_broadcast`, COPY), then spread over every state (delivered, sent, undelivered and
failed with error codes, retries, pending, ...) with a second, smaller broadcast beside it; the GET goes through the
Flask app. Prints the first (cold) and the median of the next GETs, before and after VACUUM, and a `/metrics`
scrape. The baseline, measured in the same run, is what GET did before the counts were maintained: `count(*)` per
state over the broadcast's index range. Target: GET under 50 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY_ROOT))

from api.app import create_app  # noqa: E402
from bulksms_tools.local_services import EmbeddedPostgres  # noqa: E402
from shared.broadcasts.intake import BroadcastRequest, create_broadcast  # noqa: E402
from shared.messages import counts  # noqa: E402
from shared.platform.api_keys import create_api_key  # noqa: E402
from shared.platform.db import create_database_engine, create_session_factory, sqlalchemy_url  # noqa: E402
from shared.platform.migrate import upgrade_to_head  # noqa: E402
from shared.platform.settings import load_settings  # noqa: E402

TARGET_SECONDS = 0.050
# (share of the recipients, state, error code): applied to consecutive id ranges.
STATE_MIX = (
    (0.55, "delivered", None),
    (0.15, "sent", None),
    (0.05, "accepted", None),
    (0.04, "undelivered", 30003),
    (0.02, "undelivered", 30007),
    (0.02, "failed", 21211),
    (0.01, "failed", 21610),
    (0.02, "retry_scheduled", 30003),
    (0.01, "unknown", None),
    (0.01, "sending", None),
    (0.12, "pending", None),
)


def fresh_database(server_url: str) -> str:
    admin = create_engine(sqlalchemy_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text('DROP DATABASE IF EXISTS "bulksms_bench_progress" WITH (FORCE)'))
        connection.execute(text('CREATE DATABASE "bulksms_bench_progress"'))
    admin.dispose()
    return make_url(sqlalchemy_url(server_url)).set(database="bulksms_bench_progress").render_as_string(False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    arguments = parser.parse_args()

    environment_settings = load_settings(dotenv_path=None)
    postgres = None
    if environment_settings.database_url:
        database_url = fresh_database(environment_settings.database_url)
    else:
        postgres = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="bulksms-bench-progress-")) / "postgres")
        database_url = fresh_database(postgres.start())
    try:
        upgrade_to_head(database_url)
        # GET never reaches Redis; the URL only has to be well-formed.
        settings = load_settings({"DATABASE_URL": database_url, "REDIS_URL": "redis://127.0.0.1:1/0"}, None)
        engine = create_database_engine(settings)
        session_factory = create_session_factory(engine)
        with session_factory() as session:
            api_key, plaintext = create_api_key(session, "bench")
            started = time.perf_counter()
            numbers = [f"+1{2000000000 + index * 7:010d}" for index in range(arguments.recipients)]
            big = create_broadcast(
                session, api_key_id=api_key.id, request=BroadcastRequest("bench", numbers), chunk_size=100
            ).broadcast
            other = [f"+1{3000000000 + index * 7:010d}" for index in range(arguments.recipients // 5)]
            create_broadcast(session, api_key_id=api_key.id, request=BroadcastRequest("other", other), chunk_size=100)
            print(f"intake (COPY):       {time.perf_counter() - started:.1f} s for {len(numbers) + len(other):,} rows")

            started = time.perf_counter()
            first_id = session.execute(
                text("SELECT min(id) FROM messages WHERE broadcast_id = :id"), {"id": big.id}
            ).scalar_one()
            offset = 0
            for share, state, code in STATE_MIX:
                count = round(share * arguments.recipients)
                session.execute(
                    text(
                        "UPDATE messages SET state = :state, error_code = :code "
                        "WHERE broadcast_id = :b AND id >= :low AND id < :high"
                    ),
                    {
                        "state": state,
                        "code": code,
                        "b": big.id,
                        "low": first_id + offset,
                        "high": first_id + offset + count,
                    },
                )
                offset += count
            session.execute(
                text("UPDATE broadcasts SET first_send_at = now(), last_send_at = now() WHERE id = :id"),
                {"id": big.id},
            )
            session.commit()
            print(f"states spread:       {time.perf_counter() - started:.1f} s")
            while counts.compact(session):  # what beat's sms.compact_message_counts does every sweep interval
                session.commit()
            session.commit()

        client = create_app(settings).test_client()
        headers = {"Authorization": f"Bearer {plaintext}"}

        def measure(label: str) -> float:
            timings = []
            for _ in range(arguments.repeat):
                started = time.perf_counter()
                response = client.get(f"/v1/broadcasts/{big.id}", headers=headers)
                timings.append(time.perf_counter() - started)
                assert response.status_code == 200, response.get_data(as_text=True)
            body = response.get_json()
            median = statistics.median(timings[1:]) if len(timings) > 1 else timings[0]
            print(f"GET {label:<26} first {timings[0] * 1000:7.1f} ms, median {median * 1000:7.1f} ms")
            assert body["messages"]["total"] == arguments.recipients
            return median

        measure("(right after the updates)")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE messages"))
        median = measure("(after VACUUM ANALYZE)")
        baseline = measure_baseline(session_factory, big.id, arguments.repeat)
        print(f"baseline count(*)    median {baseline * 1000:7.1f} ms  (counting the broadcast's rows per state)")
        print(f"ratio                GET / baseline = {median / baseline:.3f}")
        scrapes = []
        for _ in range(arguments.repeat):
            started = time.perf_counter()
            client.get("/metrics")
            scrapes.append(time.perf_counter() - started)
        print(f"GET /metrics         median {statistics.median(scrapes) * 1000:7.1f} ms")
        print(f"progress:            {body_summary(client, big.id, headers)}")
        print(
            f"target:              {'met' if median < TARGET_SECONDS else 'MISSED'} (< {TARGET_SECONDS * 1000:.0f} ms)"
        )
        engine.dispose()
    finally:
        if postgres is not None:
            postgres.stop()


def measure_baseline(session_factory: Any, broadcast_id: object, repeat: int) -> float:
    """The old way: count the broadcast's messages per state (an index-only scan of its range)."""
    timings = []
    with session_factory() as session:
        for _ in range(repeat):
            started = time.perf_counter()
            session.execute(
                text("SELECT state, count(*) FROM messages WHERE broadcast_id = :id GROUP BY state"),
                {"id": broadcast_id},
            ).all()
            timings.append(time.perf_counter() - started)
    return statistics.median(timings[1:]) if len(timings) > 1 else timings[0]


def body_summary(client: object, broadcast_id: object, headers: dict[str, str]) -> str:
    body = client.get(f"/v1/broadcasts/{broadcast_id}", headers=headers).get_json()  # type: ignore[attr-defined]
    return f"{body['progress']} error_codes={body['error_codes']}"


if __name__ == "__main__":
    main()
