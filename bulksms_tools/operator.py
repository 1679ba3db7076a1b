"""The operator's `bulksms` commands: send a CSV, follow, pause, resume, cancel and export broadcasts, edit the
opt-out list, and `doctor`. They talk to the API over HTTP (BULKSMS_API_URL, BULKSMS_API_KEY) like any client.

Exit codes scripts can rely on: 0 done; 1 the API refused the request (4xx, its `detail` is printed);
2 usage or configuration (a bad option, no API key, a confirmation that could not be asked); 3 the API cannot be
reached or failed (connection refused, timeout, 5xx). docs/cli.md has examples.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from bulksms_tools.api_client import ApiClient, ApiRefused, ApiUnavailable
from shared.platform.csv_cells import safe_row
from shared.platform.settings import Settings, load_settings

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

DEFAULT_CONFIRM_ABOVE = 1_000
# Broadcast statuses after which nothing more happens; `submitted` ends a watch with `--until submitted`.
FINISHED_STATUSES = ("completed", "canceled")
# Message states in the order a message goes through them, for the progress bars and tables.
STATE_ORDER = (
    "pending",
    "sending",
    "unknown",
    "accepted",
    "sent",
    "retry_scheduled",
    "delivered",
    "undelivered",
    "failed",
    "skipped",
    "canceled",
    "expired",
)
STATE_COLOURS = {"delivered": "green", "accepted": "cyan", "sent": "cyan", "failed": "red", "undelivered": "red"}

console = Console(highlight=False, soft_wrap=True)
error_console = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


class OperatorError(click.ClickException):
    """A usage or configuration problem found by a command: one line on stderr, exit code 2."""

    exit_code = EXIT_USAGE

    def show(self, file: IO[Any] | None = None) -> None:
        error_console.print(f"[bold red]error:[/] {self.message}")


# --- talking to the API -------------------------------------------------------------------------------------


def client_options(function: F) -> F:
    """`--api-url` and `--api-key`, over BULKSMS_API_URL / BULKSMS_API_KEY."""
    function = click.option(
        "--api-key", envvar=None, help="API key (default: BULKSMS_API_KEY; create one with `bulksms keys create`)."
    )(function)
    function = click.option("--api-url", help="API address (default: BULKSMS_API_URL, else http://127.0.0.1:PORT).")(
        function
    )
    return function


def api_url_of(settings: Settings, api_url: str | None = None) -> str:
    return (api_url or settings.api_url or f"http://127.0.0.1:{settings.port}").rstrip("/")


def broadcast_id_argument(_context: click.Context, _parameter: click.Parameter, value: str) -> str:
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a broadcast id (a UUID, as `bulksms list` shows)") from None


def make_client(api_url: str | None, api_key: str | None, require_key: bool = True) -> ApiClient:
    settings = load_settings()
    key = api_key or settings.api_key
    if require_key and not key:
        raise OperatorError(
            "no API key: set BULKSMS_API_KEY (or pass --api-key); create one with `bulksms keys create NAME`"
        )
    url = api_url_of(settings, api_url)
    if not url.startswith(("http://", "https://")):
        raise OperatorError(f"the API address {url!r} (BULKSMS_API_URL / --api-url) must start with http(s)://")
    return ApiClient(url, key)


def print_refusal(error: ApiRefused) -> None:
    """The problem document of a 4xx, readably: detail, then field errors, then the invalid entries listed."""
    error_console.print(f"[bold red]error:[/] the API refused the request: {error}")
    problem = error.problem
    errors = problem.get("errors")
    if isinstance(errors, dict):
        for field_name, messages in errors.items():
            for message in messages if isinstance(messages, list) else [messages]:
                error_console.print(f"  [bold]{field_name}[/]: {message}")
    for key in ("invalid", "recipients"):
        entries = problem.get(key)
        if isinstance(entries, list) and entries:
            count = problem.get(f"{key}_count") or problem.get("invalid_count") or len(entries)
            error_console.print(f"  {key} ({len(entries)} shown of {count}):")
            for entry in entries[:20]:
                error_console.print(f"    {describe_entry(entry)}")
            if len(entries) > 20:
                error_console.print(f"    … and {len(entries) - 20} more in the API's answer")
    if error.status == 401:
        error_console.print("  check BULKSMS_API_KEY / --api-key; `bulksms keys list` shows which keys are active")


def describe_entry(entry: Any) -> str:
    if not isinstance(entry, dict):
        return str(entry)
    where = f"line {entry['line']}" if "line" in entry else f"#{entry['index']}" if "index" in entry else ""
    value = entry.get("value", entry.get("to", ""))
    reason = entry.get("reason") or (f"missing {', '.join(entry['missing'])}" if entry.get("missing") else "")
    return " ".join(part for part in (where, repr(value) if value != "" else "", reason) if part)


def api_command(function: F) -> F:
    """Map the client's exceptions to the documented exit codes."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except ApiRefused as error:
            print_refusal(error)
            sys.exit(EXIT_REFUSED)
        except ApiUnavailable as error:
            error_console.print(f"[bold red]error:[/] {error}")
            sys.exit(EXIT_UNAVAILABLE)

    return wrapper  # type: ignore[return-value]


@contextmanager
def output_stream(path: str | None) -> Iterator[IO[bytes]]:
    """The file at `path` (written to a temporary name, renamed when complete), or stdout's bytes for None/-."""
    if path in (None, "-"):
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(str(path))
    partial = target.with_name(target.name + ".part")
    try:
        with open(partial, "wb") as file:
            yield file
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


# --- send ---------------------------------------------------------------------------------------------------


def count_data_rows(path: Path) -> int:
    """Rows after the header, counted by line ends (quoted line breaks overcount: only a threshold uses it)."""
    lines = 0
    last = b"\n"
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        lines += 1
    return max(0, lines - 1)


def parse_quiet_hours(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    start, separator, end = value.partition("-")
    if not separator or not start.strip() or not end.strip():
        raise click.BadParameter("write it as START-END, e.g. 21:00-08:00", param_hint="--quiet-hours")
    return start.strip(), end.strip()


def format_money(amount: Any, currency: str) -> str:
    if amount is None:
        return "not estimated"
    return f"{float(amount):,.4f} {currency}".replace(".0000 ", " ")


def format_duration(seconds: float) -> str:
    """`95` -> "1 min 35 s", `7300` -> "2 h 1 min"."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def add_estimate_rows(table: Table, view: dict[str, Any]) -> None:
    """How long sending still takes at the paced throughput, and when it should be done."""
    seconds = view.get("estimated_seconds")
    if seconds is None:
        return
    table.add_row("estimated time to send", format_duration(float(seconds)))
    if view.get("estimated_finish_at"):
        table.add_row("estimated finish", str(view["estimated_finish_at"]))


def print_intake_summary(body: dict[str, Any]) -> None:
    recipients = body.get("recipients") or {}
    message = body.get("message") or {}
    cost = body.get("cost") or {}
    dry_run = bool(body.get("dry_run")) or body.get("status") == "dry_run"
    table = Table(
        title="dry run: nothing stored or sent" if dry_run else f"broadcast {body.get('id')}",
        show_header=False,
        title_justify="left",
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    if not dry_run:
        table.add_row("status", str(body.get("status")))
        if body.get("send_at"):
            table.add_row("send at", str(body["send_at"]))
    if body.get("client_reference"):
        table.add_row("client reference", str(body["client_reference"]))
    if body.get("priority") not in (None, "normal"):
        table.add_row("priority", str(body["priority"]))
    if body.get("deadline"):
        table.add_row("deadline", str(body["deadline"]))
    for name in ("received", "accepted", "duplicates", "invalid", "opted_out", "deferred"):
        if name in recipients:
            table.add_row(f"recipients {name}", f"{int(recipients[name] or 0):,}")
    if message.get("segments") is not None:
        table.add_row("encoding", str(message.get("encoding")))
        per_recipient = message.get("segments_per_recipient") or {}
        table.add_row("segments per message", _segments_range(per_recipient, message))
        if per_recipient.get("total") is not None:
            table.add_row("segments in all", f"{int(per_recipient['total']):,}")
    table.add_row("estimated cost", format_money(cost.get("estimated"), str(cost.get("currency", ""))))
    if not dry_run:
        add_estimate_rows(table, body)
    console.print(table)
    if cost.get("note"):
        console.print(f"[dim]{cost['note']}[/]")
    for warning in body.get("warnings") or []:
        console.print(f"[yellow]warning:[/] {warning}")
    invalid = body.get("invalid") or []
    if invalid:
        console.print(f"[yellow]skipped {int(recipients.get('invalid') or len(invalid)):,} invalid entries[/], e.g.:")
        for entry in invalid[:10]:
            console.print(f"  {describe_entry(entry)}")


def _segments_range(per_recipient: dict[str, Any], message: dict[str, Any]) -> str:
    low, high = per_recipient.get("min"), per_recipient.get("max")
    if low is None or high is None or low == high:
        return str(message.get("segments"))
    return f"{low}-{high}"


def upload_progress(total_bytes: int) -> Progress:
    return Progress(
        TextColumn("[bold]uploading"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=error_console,
        transient=True,
    )


def upload_csv(
    client: ApiClient, path: Path, options: dict[str, str], idempotency_key: str | None = None
) -> tuple[int, dict[str, Any]]:
    """Stream the file to the API with a progress bar of bytes sent (on stderr, so stdout stays parseable)."""
    size = path.stat().st_size
    with upload_progress(size) as progress, open(path, "rb") as file:
        task = progress.add_task("upload", total=size)
        return client.upload_broadcast_csv(
            file, options, on_bytes=lambda sent: progress.advance(task, sent), idempotency_key=idempotency_key
        )


def send_idempotency_key(path: Path, options: dict[str, str]) -> str:
    """The Idempotency-Key of `bulksms send`: a digest of the file's bytes, the message and every option.

    The same command on the same file gives the same key, so a re-run after a timeout or a crash (when the API may
    have stored the broadcast already) gets the original broadcast back instead of sending it twice. The API
    honours a key for 24 hours: the same list sent again next week is a new broadcast.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(block)
    described = json.dumps({"file_sha256": digest.hexdigest(), "options": options}, sort_keys=True)
    return "bulksms-send-" + hashlib.sha256(described.encode()).hexdigest()[:40]


def recipients_from_csv(path: Path, phone_column: str | None) -> list[Any]:
    """The CSV as JSON recipients (`{"to", "vars"}`), for an API without CSV intake: the phone column (given,
    else `phone`, else the first one named like a number) and every other non-empty column as a variable."""
    with open(path, encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file)
        columns = [name for name in reader.fieldnames or [] if name is not None]
        column = pick_phone_column(columns, phone_column)
        recipients: list[Any] = []
        for row in reader:
            variables = {
                name: value
                for name, value in row.items()
                if name not in (None, column) and isinstance(value, str) and value != ""
            }
            number = row.get(column) or ""
            recipients.append({"to": number, "vars": variables} if variables else number)
    return recipients


def pick_phone_column(columns: list[str], wanted: str | None) -> str:
    by_lower = {name.strip().lower(): name for name in columns}
    if wanted:
        if wanted.strip().lower() in by_lower:
            return by_lower[wanted.strip().lower()]
        raise OperatorError(f"the CSV has no column {wanted!r} (its columns: {', '.join(columns) or 'none'})")
    for candidate in ("phone", "phone_number", "number", "to", "mobile", "msisdn"):
        if candidate in by_lower:
            return by_lower[candidate]
    raise OperatorError(
        f"cannot tell which column holds the phone numbers (columns: {', '.join(columns) or 'none'}): "
        "pass --phone-column"
    )


def submit(
    client: ApiClient,
    path: Path,
    options: dict[str, str],
    phone_column: str | None,
    quiet_hours: tuple[str, str] | None,
    idempotency_key: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """Upload the CSV; an API without CSV intake (415) gets the same list as JSON instead."""
    try:
        return upload_csv(client, path, options, idempotency_key)
    except ApiRefused as error:
        if error.status != 415:
            raise
    error_console.print("[dim]this API has no CSV intake (HTTP 415): sending the list as JSON instead[/]")
    body: dict[str, Any] = {"message": options["message"], "recipients": recipients_from_csv(path, phone_column)}
    for name in ("send_at", "on_invalid", "client_reference", "priority", "deadline"):
        if name in options:
            body[name] = options[name]
    if options.get("dry_run") == "true":
        body["dry_run"] = True
    if quiet_hours:
        body["quiet_hours"] = {"start": quiet_hours[0], "end": quiet_hours[1]}
    return client.create_broadcast(body, idempotency_key)


def needs_confirmation(body: dict[str, Any], confirm_above: int, confirm_above_cost: float | None) -> str | None:
    """Why a human should confirm this broadcast (None: no need)."""
    accepted = int((body.get("recipients") or {}).get("accepted") or 0)
    estimated = (body.get("cost") or {}).get("estimated")
    if accepted > confirm_above:
        return f"{accepted:,} recipients is more than --confirm-above {confirm_above:,}"
    if confirm_above_cost is not None and estimated is not None and float(estimated) > confirm_above_cost:
        return f"the estimated cost {float(estimated):,.4f} is more than --confirm-above-cost {confirm_above_cost:g}"
    return None


def stdin_is_interactive() -> bool:
    return sys.stdin.isatty()


@click.command()
@click.argument("csv_file", metavar="CONTACTS.CSV", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--message", "-m", required=True, help='The text, or a template: "Hi {first_name|there}".')
@click.option("--phone-column", help="Column holding the numbers (default: the API's choice, e.g. `phone`).")
@click.option("--send-at", help="Send later: ISO-8601 time with an offset, e.g. 2026-12-01T09:00:00+00:00.")
@click.option("--quiet-hours", help="Nobody gets it inside this window of their local time, e.g. 21:00-08:00.")
@click.option(
    "--on-invalid",
    type=click.Choice(["reject", "skip"]),
    help="Invalid numbers refuse the whole list (reject, the API's default) or are skipped.",
)
@click.option("--client-reference", help="Your own id for the broadcast, shown back with it (up to 256 characters).")
@click.option(
    "--priority",
    type=click.Choice(["high", "normal", "bulk"]),
    help="Its share of the sending capacity against broadcasts sending at the same time, 4:2:1 (default normal).",
)
@click.option("--deadline", help="Send nothing after this ISO-8601 time (at most 72 h ahead); the rest expires.")
@click.option("--dry-run", is_flag=True, help="Validate and print the counts and the cost; store and send nothing.")
@click.option("--watch", "-w", is_flag=True, help="Then show live progress until the broadcast finishes.")
@click.option(
    "--until",
    type=click.Choice(["submitted", "completed"]),
    default="completed",
    show_default=True,
    help="With --watch: stop once every message has a Twilio answer (submitted) or every outcome is in.",
)
@click.option(
    "--idempotency-key",
    help="Send this Idempotency-Key instead of the one derived from the file, the message and the options.",
)
@click.option("--yes", "-y", is_flag=True, help="Send without asking for confirmation.")
@click.option(
    "--confirm-above",
    type=click.IntRange(0),
    default=DEFAULT_CONFIRM_ABOVE,
    show_default=True,
    help="Run a dry run first and ask before sending to more recipients than this.",
)
@click.option("--confirm-above-cost", type=click.FloatRange(0), help="Also ask when the estimated cost is above this.")
@client_options
@api_command
def send(
    csv_file: Path,
    message: str,
    phone_column: str | None,
    send_at: str | None,
    quiet_hours: str | None,
    on_invalid: str | None,
    client_reference: str | None,
    priority: str | None,
    deadline: str | None,
    dry_run: bool,
    watch: bool,
    until: str,
    idempotency_key: str | None,
    yes: bool,
    confirm_above: int,
    confirm_above_cost: float | None,
    api_url: str | None,
    api_key: str | None,
) -> None:
    """Send MESSAGE to every number in CONTACTS.CSV (a header row; other columns are template variables)."""
    window = parse_quiet_hours(quiet_hours)
    client = make_client(api_url, api_key)
    options = {"message": message}
    if phone_column:
        options["phone_column"] = phone_column
    if send_at:
        options["send_at"] = send_at
    if window:
        options["quiet_hours_start"], options["quiet_hours_end"] = window
    if on_invalid:
        options["on_invalid"] = on_invalid
    if client_reference is not None:
        options["client_reference"] = client_reference
    if priority:
        options["priority"] = priority
    if deadline:
        options["deadline"] = deadline

    if dry_run:
        _, body = submit(client, csv_file, {**options, "dry_run": "true"}, phone_column, window)
        print_intake_summary(body)
        return

    rows = count_data_rows(csv_file)
    if not yes and (rows > confirm_above or confirm_above_cost is not None):
        _, preview = submit(client, csv_file, {**options, "dry_run": "true"}, phone_column, window)
        print_intake_summary(preview)
        reason = needs_confirmation(preview, confirm_above, confirm_above_cost)
        if reason:
            if not stdin_is_interactive():
                raise OperatorError(
                    f"not sending: {reason}, and there is no terminal to confirm on; "
                    "pass --yes to send without confirmation"
                )
            if not click.confirm(f"Send to {int(preview['recipients']['accepted']):,} recipients?", default=False):
                error_console.print("not sent.")
                sys.exit(EXIT_REFUSED)

    key = idempotency_key or send_idempotency_key(csv_file, options)
    console.print(f"Idempotency-Key: {key}")
    started = time.monotonic()
    try:
        status, body = submit(client, csv_file, options, phone_column, window, key)
    except ApiUnavailable:
        error_console.print(
            "[yellow]the API may or may not have stored this broadcast: run the same command again "
            "(within 24 hours) and it sends the same Idempotency-Key, so nothing is sent twice[/]"
        )
        raise
    print_intake_summary(body)
    if status == 200:
        console.print(
            "[yellow]this list was already sent (same Idempotency-Key, within 24 hours): nothing new was created[/]"
        )
    console.print(f"accepted as broadcast [bold]{body['id']}[/] in {time.monotonic() - started:.2f}s")
    if watch:
        watch_broadcast(client, str(body["id"]), until=until)
    else:
        console.print(f"[dim]follow it with: bulksms status {body['id']} --watch[/]")


# --- status, list, pause, resume, cancel --------------------------------------------------------------------


def state_counts(view: dict[str, Any]) -> dict[str, int]:
    messages = view.get("messages") or {}
    counts = {str(state): int(count or 0) for state, count in messages.items() if state != "total"}
    ordered = {state: counts.pop(state) for state in STATE_ORDER if state in counts}
    ordered.update(counts)
    return ordered


def is_finished(view: dict[str, Any], until: str) -> bool:
    status = view.get("status")
    if status in FINISHED_STATUSES:
        return True
    return until == "submitted" and status == "submitted"


def watch_broadcast(client: ApiClient, broadcast_id: str, until: str = "completed", interval: float = 1.0) -> None:
    """Live bars per message state until the broadcast is finished; Ctrl-C stops watching, not the broadcast."""
    started = time.monotonic()
    view = client.broadcast(broadcast_id)
    try:
        with Progress(
            TextColumn("{task.description:>16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            overall = progress.add_task("[bold]done", total=None)
            bars: dict[str, TaskID] = {}
            while True:
                total = int((view.get("messages") or {}).get("total") or 0)
                counts = state_counts(view)
                final = int((view.get("progress") or {}).get("final") or 0) + counts.get("skipped", 0)
                final += counts.get("canceled", 0) + counts.get("expired", 0)
                progress.update(
                    overall, total=total or None, completed=final, description=f"[bold]{view.get('status')}"
                )
                for state, count in counts.items():
                    if count and state not in bars:
                        colour = STATE_COLOURS.get(state, "white")
                        bars[state] = progress.add_task(f"[{colour}]{state}", total=total or None)
                    if state in bars:
                        progress.update(bars[state], total=total or None, completed=count)
                if is_finished(view, until):
                    break
                time.sleep(interval)
                view = client.broadcast(broadcast_id)
    except KeyboardInterrupt:
        error_console.print(f"\nstopped watching; the broadcast goes on: bulksms status {broadcast_id}")
        sys.exit(130)
    print_tally(view, time.monotonic() - started)


def print_tally(view: dict[str, Any], elapsed_seconds: float | None = None) -> None:
    table = Table(title=f"broadcast {view.get('id')}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("status", str(view.get("status")))
    if view.get("client_reference"):
        table.add_row("client reference", str(view["client_reference"]))
    messages = view.get("messages") or {}
    table.add_row("recipients", f"{int(messages.get('total') or 0):,}")
    for state, count in state_counts(view).items():
        if count:
            table.add_row(state, f"{count:,}")
    progress = view.get("progress") or {}
    if progress.get("delivery_rate_percent") is not None:
        table.add_row("delivery rate", f"{progress['delivery_rate_percent']}%")
    cost = view.get("cost") or {}
    if cost:
        table.add_row("estimated cost", format_money(cost.get("estimated"), str(cost.get("currency", ""))))
    add_estimate_rows(table, view)
    if view.get("status") == "held":
        table.add_row("held because", str(view.get("held_reason")))
        until = view.get("held_until")
        table.add_row("resumes", str(until) if until else "when an operator resumes it: bulksms resume ID")
    if view.get("queued_at_twilio_when_stopped") is not None:
        table.add_row("still queued at Twilio when stopped", f"{int(view['queued_at_twilio_when_stopped']):,}")
    for name in ("send_at", "created_at", "submitted_at", "completed_at", "paused_at", "canceled_at"):
        if view.get(name):
            table.add_row(name.replace("_", " "), str(view[name]))
    if elapsed_seconds is not None:
        table.add_row("watched for", f"{elapsed_seconds:.1f} s")
    console.print(table)
    error_codes = view.get("error_codes") or []
    if error_codes:
        console.print(
            "error codes: " + ", ".join(f"{entry.get('error_code')}: {entry.get('count')}" for entry in error_codes)
        )


@click.command()
@click.argument("broadcast_id", callback=broadcast_id_argument)
@click.option("--watch", "-w", is_flag=True, help="Live progress until the broadcast finishes.")
@click.option("--until", type=click.Choice(["submitted", "completed"]), default="completed", show_default=True)
@client_options
@api_command
def status(broadcast_id: str, watch: bool, until: str, api_url: str | None, api_key: str | None) -> None:
    """Show a broadcast's status and its count of messages per state."""
    client = make_client(api_url, api_key)
    if watch:
        watch_broadcast(client, broadcast_id, until=until)
    else:
        print_tally(client.broadcast(broadcast_id))


@click.command("list")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="Show at most this many.")
@click.option("--client-reference", help="Only the broadcasts sent with this client reference (exact match).")
@client_options
@api_command
def list_command(limit: int, client_reference: str | None, api_url: str | None, api_key: str | None) -> None:
    """List your broadcasts, newest first."""
    client = make_client(api_url, api_key)
    table = Table("id", "status", "created (UTC)", "recipients", "segments", "estimated cost", "client reference")
    for column in table.columns[:3]:
        column.no_wrap = True
    shown = 0
    filters = {"client_reference": client_reference} if client_reference is not None else {}
    for item in client.broadcasts(limit=min(limit, 200), filters=filters):
        recipients = item.get("recipients") or {}
        segments = ((item.get("message") or {}).get("segments_per_recipient") or {}).get("total")
        cost = item.get("cost") or {}
        table.add_row(
            str(item.get("id")),
            str(item.get("status")),
            str(item.get("created_at", ""))[:16].replace("T", " "),
            f"{int(recipients.get('accepted') or 0):,}",
            "" if segments is None else f"{int(segments):,}",
            format_money(cost.get("estimated"), str(cost.get("currency", ""))) if cost else "",
            str(item.get("client_reference") or ""),
        )
        shown += 1
        if shown >= limit:
            break
    if not shown:
        if filters:
            console.print(f"no broadcast has the client reference {client_reference!r}")
        else:
            console.print("no broadcasts yet: send one with `bulksms send contacts.csv --message ...`")
        return
    # Piped output has no terminal width to fit: keep each broadcast on one line for grep and awk.
    output = console if console.is_terminal else Console(highlight=False, width=160, file=sys.stdout)
    output.print(table)


def control_command(action: str, past: str, help_text: str) -> click.Command:
    @click.command(action, help=help_text)
    @click.argument("broadcast_id", callback=broadcast_id_argument)
    @client_options
    @api_command
    def command(broadcast_id: str, api_url: str | None, api_key: str | None) -> None:
        view = make_client(api_url, api_key).control(broadcast_id, action)
        console.print(f"broadcast {view.get('id', broadcast_id)} {past}: status [bold]{view.get('status')}[/]")

    return command


pause = control_command("pause", "paused", "Pause a queued or sending broadcast (within about a second).")
resume = control_command("resume", "resumed", "Resume a paused broadcast where it stopped.")
cancel = control_command("cancel", "canceled", "Cancel a broadcast: nobody not yet sent to will be.")


# --- export -------------------------------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "to",
    "state",
    "attempts",
    "twilio_sid",
    "twilio_status",
    "error_code",
    "error_message",
    "sent_at",
    "updated_at",
)


def messages_as_csv(client: ApiClient, broadcast_id: str, state: str | None) -> Iterator[bytes]:
    """The JSON message pages as CSV, for an API without `messages.csv`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    for number, item in enumerate(client.messages(broadcast_id, state), start=1):
        writer.writerow(safe_row(item.get(column) for column in EXPORT_COLUMNS))
        if number % 1000 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


@click.command()
@click.argument("broadcast_id", callback=broadcast_id_argument)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="File to write (default: stdout).")
@click.option("--state", help="Only messages in this state (delivered, failed, skipped, ...).")
@client_options
@api_command
def export(broadcast_id: str, output: str | None, state: str | None, api_url: str | None, api_key: str | None) -> None:
    """Write a broadcast's messages as CSV, streamed (to a file with -o, else to stdout)."""
    client = make_client(api_url, api_key)
    blocks: Iterator[bytes]
    try:
        response = client.messages_csv(broadcast_id, state)
        blocks = response.iter_content(chunk_size=64 * 1024)
    except ApiRefused as error:
        if error.status != 404:
            raise
        client.broadcast(broadcast_id)  # a 404 here: no such broadcast, reported as such
        error_console.print("[dim]this API has no messages.csv: exporting from the JSON pages instead[/]")
        blocks = messages_as_csv(client, broadcast_id, state)
    written = 0
    with output_stream(output) as file:
        for block in blocks:
            file.write(block)
            written += len(block)
    if output not in (None, "-"):
        error_console.print(f"wrote {written:,} bytes to {output}")


# --- opt-outs -----------------------------------------------------------------------------------------------


@click.group("opt-outs")
def opt_outs() -> None:
    """The account-wide opt-out list: nobody on it is ever sent to."""


@opt_outs.command("add")
@click.argument("numbers", nargs=-1, required=True)
@click.option("--reason", help="Why (kept with each number).")
@client_options
@api_command
def opt_outs_add(numbers: tuple[str, ...], reason: str | None, api_url: str | None, api_key: str | None) -> None:
    """Add NUMBERS to the opt-out list."""
    result = make_client(api_url, api_key).add_opt_outs(list(numbers), reason)
    added, present = result.get("added") or [], result.get("already_present") or []
    console.print(f"added {len(added):,}; already on the list {len(present):,}")
    for number in added:
        console.print(f"  + {number}")


@opt_outs.command("remove")
@click.argument("number")
@client_options
@api_command
def opt_outs_remove(number: str, api_url: str | None, api_key: str | None) -> None:
    """Take NUMBER off the opt-out list (it can be sent to again)."""
    make_client(api_url, api_key).remove_opt_out(number)
    console.print(f"removed {number} from the opt-out list")


@opt_outs.command("import")
@click.argument("csv_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--reason", help="Reason for rows without a `reason` column value.")
@client_options
@api_command
def opt_outs_import(csv_file: Path, reason: str | None, api_url: str | None, api_key: str | None) -> None:
    """Import a CSV with a `phone` column (and optionally `reason`) into the opt-out list."""
    client = make_client(api_url, api_key)
    size = csv_file.stat().st_size
    with upload_progress(size) as progress, open(csv_file, "rb") as file:
        task = progress.add_task("upload", total=size)
        result = client.import_opt_outs(file, reason, on_bytes=lambda sent: progress.advance(task, sent))
    console.print(
        f"imported {int(result.get('imported') or 0):,}; already on the list "
        f"{int(result.get('already_present') or 0):,}; invalid {int(result.get('invalid_count') or 0):,}"
    )
    for entry in (result.get("invalid") or [])[:20]:
        console.print(f"  {describe_entry(entry)}")


@opt_outs.command("export")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="File to write (default: stdout).")
@client_options
@api_command
def opt_outs_export(output: str | None, api_url: str | None, api_key: str | None) -> None:
    """Write the whole opt-out list as CSV (phone,source,reason,created_at), streamed."""
    response = make_client(api_url, api_key).opt_outs_csv()
    with output_stream(output) as file:
        for block in response.iter_content(chunk_size=64 * 1024):
            file.write(block)
    if output not in (None, "-"):
        error_console.print(f"wrote the opt-out list to {output}")


# --- doctor -------------------------------------------------------------------------------------------------


@click.command()
@click.option("--api-url", help="API address (default: BULKSMS_API_URL, else http://127.0.0.1:PORT).")
@click.option("--api-key", help="API key to check (default: BULKSMS_API_KEY).")
def doctor(api_url: str | None, api_key: str | None) -> None:
    """Check what a first broadcast needs (databases, migrations, Twilio, workers, beat, API) and say what to fix."""
    from bulksms_tools.doctor import run_checks

    settings = load_settings()
    failed = 0
    for check in run_checks(settings, api_url=api_url_of(settings, api_url), api_key=api_key or settings.api_key):
        mark = "[green]✔[/]" if check.ok else "[red]✘[/]"
        console.print(f"{mark} [bold]{check.name}[/]: {check.detail}")
        if not check.ok:
            failed += 1
            if check.fix:
                console.print(f"    [yellow]fix:[/] {check.fix}")
    if failed:
        console.print(f"\n[red]{failed} check(s) failed.[/]")
        sys.exit(1)
    console.print("\n[green]all checks passed.[/]")


OPERATOR_COMMANDS = (send, status, list_command, pause, resume, cancel, export, opt_outs, doctor)


def register_operator_commands(group: click.Group) -> None:
    for command in OPERATOR_COMMANDS:
        group.add_command(command)
