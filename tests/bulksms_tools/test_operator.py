"""The operator commands (`bulksms send`, `status`, `export`, `opt-outs`, `doctor`, ...) against a real stack.

One `bulksms up` (embedded PostgreSQL and Redis, the simulator, gunicorn, a worker and beat) runs for the whole
module on free ports with a throw-away data folder; the commands run in-process through click's runner, which
gives them no terminal (as in a script or CI), and talk to it over HTTP.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result

from bulksms_tools.cli import cli
from bulksms_tools.local_services import find_free_port
from bulksms_tools.operator import send_idempotency_key
from tests.bulksms_tools.test_stack import SETTING_VARIABLES, bulksms, processes_of
from tests.conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


class Stack:
    def __init__(self, process: subprocess.Popen[str], environment: dict[str, str], log_path: Path) -> None:
        self.process = process
        self.environment = environment
        self.log_path = log_path
        self.data_dir = Path(environment["BULKSMS_DATA_DIR"])
        self.api_url = f"http://127.0.0.1:{environment['PORT']}"
        self.api_key = ""

    def ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"bulksms up exited with {self.process.returncode}:\n{self.log_path.read_text()}")
        try:
            return requests.get(f"{self.api_url}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def run(self, *arguments: str, api_key: str | None = None, **environment: str | None) -> Result:
        """`bulksms ARGUMENTS` in-process with this stack's settings (and no others from the test process)."""
        variables: dict[str, str | None] = {name: None for name in SETTING_VARIABLES}
        variables.update(
            {
                "BULKSMS_DATA_DIR": str(self.data_dir),
                "PORT": self.environment["PORT"],
                "BULKSMS_API_URL": self.api_url,
                "BULKSMS_API_KEY": api_key if api_key is not None else self.api_key,
            }
        )
        variables.update(environment)
        return CliRunner().invoke(cli, list(arguments), env=variables, catch_exceptions=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("cli-operator")
    # The data folder lives outside pytest's temp folders, whose permissions another pytest session resets while
    # the embedded PostgreSQL (running as its own user) still needs them.
    data_parent = Path(tempfile.mkdtemp(prefix="bulksms-test-operator-"))
    environment = {name: value for name, value in os.environ.items() if name not in SETTING_VARIABLES}
    environment.update(
        {
            "BULKSMS_DATA_DIR": str(data_parent / "data"),
            "PORT": str(find_free_port()),
            "SWEEPER_INTERVAL_SECONDS": "1",  # completion and the beat heartbeat within a second or two
        }
    )
    log_path = folder / "bulksms-up.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            bulksms("up", "--api-workers", "1", "--worker-concurrency", "2"),
            env=environment,
            cwd=folder,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    running = Stack(process, environment, log_path)
    try:
        wait_until(running.ready, timeout_seconds=180, interval=0.5, message="bulksms up to be ready")
        created = running.run("keys", "create", "cli-test", "--scope", "admin")
        assert created.exit_code == 0, created.output
        running.api_key = next(line for line in created.output.splitlines() if line.startswith("bsk_"))
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        for leftover in processes_of(running.data_dir):
            leftover.kill()
        shutil.rmtree(data_parent, ignore_errors=True)


def contacts_csv(path: Path, count: int, start: int = 0) -> Path:
    lines = ["phone,first_name"] + [f"+1555{start + index:07d},Name{index}" for index in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def broadcast_ids(stack: Stack) -> set[str]:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    items = requests.get(f"{stack.api_url}/v1/broadcasts?limit=200", headers=headers, timeout=10).json()["items"]
    return {str(item["id"]) for item in items}


def tally(output: str) -> dict[str, str]:
    """The rows of the tables printed, as {label: value}."""
    cells = (re.split(r"[│|]", line) for line in output.splitlines())
    return {row[1].strip(): row[2].strip() for row in cells if len(row) >= 4}


def test_send_with_watch_runs_to_completion_and_prints_the_tally(stack: Stack, tmp_path: Path) -> None:
    contacts = contacts_csv(tmp_path / "contacts.csv", 30)
    result = stack.run("send", str(contacts), "--message", "Hi {first_name}", "--yes", "--watch")
    assert result.exit_code == 0, result.output
    rows = tally(result.output)
    assert rows["recipients accepted"] == "30"
    assert rows["estimated cost"] == "0.2490 USD"
    assert rows["status"] == "completed"
    assert rows["delivered"] == "30"
    assert rows["delivery rate"] == "100.0%"


def test_dry_run_prints_the_cost_and_stores_nothing(stack: Stack, tmp_path: Path) -> None:
    contacts = contacts_csv(tmp_path / "contacts.csv", 4, start=100)
    before = broadcast_ids(stack)
    result = stack.run("send", str(contacts), "-m", "Hello ☃", "--dry-run", "--quiet-hours", "21:00-08:00")
    assert result.exit_code == 0, result.output
    assert "dry run: nothing stored or sent" in result.output
    rows = tally(result.output)
    assert rows["recipients accepted"] == "4"
    assert rows["encoding"] == "UCS-2"
    assert rows["estimated cost"] == "0.0332 USD"
    assert broadcast_ids(stack) == before


def test_a_large_list_is_not_sent_without_confirmation_when_nobody_can_confirm(stack: Stack, tmp_path: Path) -> None:
    contacts = contacts_csv(tmp_path / "contacts.csv", 12, start=200)
    before = broadcast_ids(stack)
    result = stack.run("send", str(contacts), "-m", "Hello", "--confirm-above", "10")
    assert result.exit_code == 2, result.output
    assert "12 recipients is more than --confirm-above 10" in result.output
    assert "pass --yes" in result.output
    assert "estimated cost" in result.output  # the dry run's figures were shown first
    assert broadcast_ids(stack) == before

    below_threshold = stack.run("send", str(contacts), "-m", "Hello", "--confirm-above", "12")
    assert below_threshold.exit_code == 0, below_threshold.output
    assert len(broadcast_ids(stack) - before) == 1


def test_status_list_pause_resume_cancel_and_export(stack: Stack, tmp_path: Path) -> None:
    contacts = contacts_csv(tmp_path / "contacts.csv", 5, start=300)
    send_at = (datetime.now(UTC) + timedelta(days=10)).isoformat(timespec="seconds")
    sent = stack.run("send", str(contacts), "-m", "Later", "--yes", "--send-at", send_at)
    assert sent.exit_code == 0, sent.output
    assert tally(sent.output)["status"] == "scheduled"
    broadcast_id = re.search(r"accepted as broadcast ([0-9a-f-]{36})", sent.output).group(1)  # type: ignore[union-attr]

    listed = stack.run("list")
    assert listed.exit_code == 0 and broadcast_id in listed.output and "scheduled" in listed.output

    status = stack.run("status", broadcast_id)
    assert status.exit_code == 0, status.output
    assert tally(status.output)["pending"] == "5"

    paused = stack.run("pause", broadcast_id)  # a scheduled broadcast cannot be paused: the API says 409
    assert paused.exit_code == 1
    assert "HTTP 409" in paused.output

    canceled = stack.run("cancel", broadcast_id)
    assert canceled.exit_code == 0, canceled.output
    assert "status canceled" in canceled.output
    resumed = stack.run("resume", broadcast_id)
    assert resumed.exit_code == 1 and "HTTP 409" in resumed.output

    export_path = tmp_path / "messages.csv"
    exported = stack.run("export", broadcast_id, "-o", str(export_path))
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(export_path.open()))
    assert len(rows) == 5
    assert {row["state"] for row in rows} == {"canceled"}
    assert not (tmp_path / "messages.csv.part").exists()

    to_stdout = stack.run("export", broadcast_id, "--state", "delivered")
    assert to_stdout.exit_code == 0
    assert len(list(csv.reader(io.StringIO(to_stdout.stdout)))) == 1  # the header only


def test_send_with_a_client_reference_then_list_by_it(stack: Stack, tmp_path: Path) -> None:
    send_at = (datetime.now(UTC) + timedelta(days=10)).isoformat(timespec="seconds")
    ids = {}
    for reference, start in (("crm-cli-1", 400), ("crm-cli-2", 410)):
        contacts = contacts_csv(tmp_path / f"{reference}.csv", 2, start=start)
        sent = stack.run(
            "send", str(contacts), "-m", "Tagged", "--yes", "--send-at", send_at, "--client-reference", reference
        )
        assert sent.exit_code == 0, sent.output
        assert tally(sent.output)["client reference"] == reference
        ids[reference] = re.search(r"accepted as broadcast ([0-9a-f-]{36})", sent.output).group(1)  # type: ignore[union-attr]

    listed = stack.run("list", "--client-reference", "crm-cli-1")
    assert listed.exit_code == 0, listed.output
    assert ids["crm-cli-1"] in listed.output and "crm-cli-1" in listed.output
    assert ids["crm-cli-2"] not in listed.output
    status = stack.run("status", ids["crm-cli-2"])
    assert tally(status.output)["client reference"] == "crm-cli-2"
    nothing = stack.run("list", "--client-reference", "crm-nobody")
    assert nothing.exit_code == 0 and "no broadcast has the client reference 'crm-nobody'" in nothing.output


def test_send_with_a_priority_and_a_deadline(stack: Stack, tmp_path: Path) -> None:
    send_at = datetime.now(UTC) + timedelta(days=1)
    deadline = (send_at + timedelta(hours=2)).isoformat(timespec="seconds")
    contacts = contacts_csv(tmp_path / "urgent.csv", 2, start=420)
    sent = stack.run(
        "send", str(contacts), "-m", "Urgent", "--yes", "--send-at", send_at.isoformat(timespec="seconds"),
        "--priority", "high", "--deadline", deadline,
    )  # fmt: skip
    assert sent.exit_code == 0, sent.output
    summary = tally(sent.output)
    assert summary["priority"] == "high"
    assert datetime.fromisoformat(summary["deadline"]) == datetime.fromisoformat(deadline)
    refused = stack.run("send", str(contacts), "-m", "Late", "--yes", "--deadline", "2020-01-01T00:00:00Z")
    assert refused.exit_code != 0 and "deadline" in refused.output


def test_pause_and_resume_a_sending_broadcast(stack: Stack, tmp_path: Path) -> None:
    contacts = contacts_csv(tmp_path / "contacts.csv", 3000, start=1000)
    sent = stack.run("send", str(contacts), "-m", "Bulk", "--yes")
    assert sent.exit_code == 0, sent.output
    broadcast_id = re.search(r"accepted as broadcast ([0-9a-f-]{36})", sent.output).group(1)  # type: ignore[union-attr]
    paused = stack.run("pause", broadcast_id)
    if paused.exit_code == 1 and "submitted" in paused.output:
        pytest.skip("the broadcast finished before it could be paused")
    assert paused.exit_code == 0, paused.output
    assert "status paused" in paused.output
    resumed = stack.run("resume", broadcast_id)
    assert resumed.exit_code == 0, resumed.output
    watched = stack.run("status", broadcast_id, "--watch", "--until", "submitted")
    assert watched.exit_code == 0, watched.output
    rows = tally(watched.output)
    assert rows["recipients"] == "3,000"
    assert "pending" not in rows and "sending" not in rows


def test_opt_outs_add_import_export_remove(stack: Stack, tmp_path: Path) -> None:
    added = stack.run("opt-outs", "add", "+44 7700 900123", "0015550009999", "--reason", "asked by phone")
    assert added.exit_code == 0, added.output
    assert "added 2" in added.output

    imported_file = tmp_path / "stops.csv"
    imported_file.write_text("phone,reason\n+15550008888,stop reply\nnot-a-number,\n")
    imported = stack.run("opt-outs", "import", str(imported_file))
    assert imported.exit_code == 0, imported.output
    assert "imported 1" in imported.output and "invalid 1" in imported.output and "line 3" in imported.output

    exported = stack.run("opt-outs", "export")
    assert exported.exit_code == 0
    listed = {row["phone"]: row for row in csv.DictReader(io.StringIO(exported.stdout))}
    assert listed["+447700900123"]["reason"] == "asked by phone"
    assert listed["+15550008888"]["source"] == "csv_import"

    removed = stack.run("opt-outs", "remove", "+447700900123")
    assert removed.exit_code == 0, removed.output
    again = stack.run("opt-outs", "remove", "+447700900123")
    assert again.exit_code == 1
    assert "not on the opt-out list" in again.output
    export_path = tmp_path / "opt-outs.csv"
    assert stack.run("opt-outs", "export", "-o", str(export_path)).exit_code == 0
    assert "+447700900123" not in export_path.read_text()


def test_refusals_and_unreachable_api_have_their_exit_codes(stack: Stack, tmp_path: Path) -> None:
    bad_key = stack.run("list", api_key="bsk_00000000_nottherightsecret")
    assert bad_key.exit_code == 1
    assert "HTTP 401" in bad_key.output and "unknown or revoked" in bad_key.output

    invalid = tmp_path / "invalid.csv"
    invalid.write_text("phone\n+15550001111\nabc\n")
    refused = stack.run("send", str(invalid), "-m", "Hi", "--yes")
    assert refused.exit_code == 1
    assert "not valid phone numbers" in refused.output and "'abc'" in refused.output

    no_key = stack.run("list", api_key="")
    assert no_key.exit_code == 2 and "BULKSMS_API_KEY" in no_key.output

    down = stack.run("list", BULKSMS_API_URL=f"http://127.0.0.1:{find_free_port()}")
    assert down.exit_code == 3
    assert "is the API running? (bulksms up)" in down.output

    not_an_id = stack.run("status", "not-an-id")
    assert not_an_id.exit_code == 2


def test_doctor_passes_against_the_running_stack_and_names_what_is_missing(stack: Stack) -> None:
    wait_until(lambda: stack.run("doctor").exit_code == 0, timeout_seconds=30, message="the beat heartbeat")
    result = stack.run("doctor")
    assert result.exit_code == 0, result.output
    for line in (
        "✔ PostgreSQL",
        "✔ migrations",
        "✔ Redis",
        "✔ Twilio credentials",
        "not checkable against the simulator",
        "✔ Celery workers",
        "✔ Celery beat",
        "✔ API",
        "✔ API key",
    ):
        assert line in result.output, result.output

    elsewhere = stack.run("doctor", BULKSMS_DATA_DIR=str(stack.data_dir.parent / "empty"), api_key="")
    assert elsewhere.exit_code == 1
    assert "✘ PostgreSQL" in elsewhere.output and "bulksms up" in elsewhere.output
    assert "✘ API key" in elsewhere.output


def test_doctor_checks_public_base_url_for_real_twilio(stack: Stack) -> None:
    from bulksms_tools.doctor import Environment, check_public_base_url
    from shared.platform.settings import Settings

    def verdict(public_base_url: str | None) -> Any:
        settings = Settings(public_base_url=public_base_url)
        return check_public_base_url(Environment(settings, stack.api_url, None, None, simulator=False)).ok

    assert not verdict(None)
    assert not verdict("http://sms.example.com")
    assert not verdict("https://127.0.0.1:8000")
    assert not verdict("https://10.1.2.3")
    assert verdict("https://8.8.8.8")


def test_keys_create_sets_the_keys_default_region_and_allowed_countries(stack: Stack) -> None:
    created = stack.run("keys", "create", "uk-list", "--default-region", "gb", "--allowed-countries", "GB, ie")
    assert created.exit_code == 0, created.output
    assert "default region GB; allowed countries GB, IE" in created.output
    key = next(line for line in created.output.splitlines() if line.startswith("bsk_"))

    body = {"message": "hi", "recipients": ["07700 900123", "+33612345678"], "on_invalid": "skip", "dry_run": True}
    answer = requests.post(
        f"{stack.api_url}/v1/broadcasts", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ).json()
    assert answer["recipients"]["by_country"] == {"GB": 1}
    assert answer["invalid"][0]["reason"] == "FR is not among the allowed countries"

    listed = stack.run("keys", "list")
    assert "GB,IE" in listed.output

    refused = stack.run("keys", "create", "typo", "--default-region", "UK")
    assert refused.exit_code == 2
    assert "'UK' is not an ISO 3166-1 alpha-2 country code" in refused.output


def test_send_derives_an_idempotency_key_so_a_re_run_sends_nothing_twice(stack: Stack, tmp_path: Path) -> None:
    contacts = contacts_csv(tmp_path / "rerun.csv", 5, start=7000)
    options = {"message": "Hi {first_name}"}
    key = send_idempotency_key(contacts, options)
    # A first run whose upload reached the API but whose answer never came back (a timeout, a crash): the API
    # stored the broadcast under the key the command derives.
    first = requests.post(
        f"{stack.api_url}/v1/broadcasts",
        params=options,
        data=contacts.read_bytes(),
        headers={"Authorization": f"Bearer {stack.api_key}", "Content-Type": "text/csv", "Idempotency-Key": key},
        timeout=30,
    )
    assert first.status_code == 202, first.text
    before = broadcast_ids(stack)

    rerun = stack.run("send", str(contacts), "--message", "Hi {first_name}", "--yes")
    assert rerun.exit_code == 0, rerun.output
    assert f"Idempotency-Key: {key}" in rerun.output
    assert "already sent" in rerun.output
    assert f"accepted as broadcast {first.json()['id']}" in rerun.output
    assert broadcast_ids(stack) == before

    # Another message (or file, or option) is another broadcast.
    other = stack.run("send", str(contacts), "--message", "Hello {first_name}", "--yes")
    assert other.exit_code == 0, other.output
    assert "already sent" not in other.output
    assert len(broadcast_ids(stack) - before) == 1


def test_keys_create_with_a_scope_and_limits_then_update(stack: Stack) -> None:
    created = stack.run("keys", "create", "reporting", "--scope", "read", "--rate-limit", "2")
    assert created.exit_code == 0, created.output
    assert "scope read; 2/min, DAILY_MESSAGE_LIMIT" in created.output
    key = next(line for line in created.output.splitlines() if line.startswith("bsk_"))
    key_id = re.search(r"created API key (\d+)", created.output)
    assert key_id is not None
    headers = {"Authorization": f"Bearer {key}"}
    answers = [requests.get(f"{stack.api_url}/v1/broadcasts", headers=headers, timeout=10) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert int(answers[2].headers["Retry-After"]) <= 60

    updated = stack.run("keys", "update", key_id.group(1), "--scope", "send", "--daily-limit", "100")
    assert updated.exit_code == 0, updated.output
    assert "scope send; 2/min, 100 recipients/day" in updated.output
    listed = stack.run("keys", "list", COLUMNS="200")  # wide enough for rich not to wrap the table
    assert "reporting" in listed.output and "100 recipients/day" in listed.output
