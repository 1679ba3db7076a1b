"""Run the Twilio simulator: `python -m bulksms_tools.simulator --port 8010 --latency-ms 100`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aiohttp import web

from bulksms_tools.simulator.pool import (
    DEFAULT_QUEUE_LIMIT_SECONDS,
    Assignment,
    PoolConfig,
    PoolConfigError,
    parse_pool_spec,
)
from bulksms_tools.simulator.server import SimulatorConfig, create_app


def parse_arguments(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, SimulatorConfig]:
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(prog="python -m bulksms_tools.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--account-sid", default=defaults.account_sid, help="the only account accepted")
    parser.add_argument("--auth-token", default=defaults.auth_token, help="its auth token (also signs callbacks)")
    parser.add_argument("--api-key-sid", default=None, help="an API Key SID (SK...) also accepted for requests")
    parser.add_argument("--api-key-secret", default=None, help="that API Key's secret")
    parser.add_argument("--latency-ms", type=float, default=defaults.latency_ms, help="time to answer each request")
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=defaults.max_concurrency,
        help="requests in flight before 429 (0: none)",
    )
    parser.add_argument("--error-rate-429", type=float, default=0.0, help="share of sends refused with 429 / 20429")
    parser.add_argument(
        "--error-rate-500", type=float, default=0.0, help="share of sends stored but answered 500 / 20500"
    )
    parser.add_argument("--no-callbacks", action="store_true", help="never post status callbacks")
    parser.add_argument(
        "--callback-delay-ms",
        type=float,
        default=defaults.callback_delay_ms,
        help="time between status steps",
    )
    parser.add_argument(
        "--slow-ms", type=float, default=defaults.slow_ms, help="answer delay for the slow magic prefix"
    )
    parser.add_argument("--callback-workers", type=int, default=defaults.callback_workers)
    parser.add_argument(
        "--callback-backlog",
        type=int,
        default=defaults.callback_backlog,
        help="messages with callbacks pending",
    )
    parser.add_argument(
        "--pool",
        default="",
        help="the Messaging Service's senders, COUNTxRATE[:TYPE] comma-separated, RATE in segments/s, TYPE "
        "long_code (default), toll_free, short_code or alpha; e.g. 10x5 or 10x5,1x100:short_code "
        "(default: none, one sender of unlimited rate)",
    )
    parser.add_argument(
        "--queue-limit-seconds",
        type=float,
        default=DEFAULT_QUEUE_LIMIT_SECONDS,
        help="seconds of a sender's throughput its queue holds before 30001 (Twilio: 36000)",
    )
    parser.add_argument(
        "--sender-assignment",
        choices=[assignment.value for assignment in Assignment],
        default=Assignment.LEAST_LOADED.value,
        help="how the Messaging Service picks a sender for a message",
    )
    arguments = parser.parse_args(argv)
    if bool(arguments.api_key_sid) != bool(arguments.api_key_secret):
        parser.error("--api-key-sid and --api-key-secret go together")
    for name in ("error_rate_429", "error_rate_500"):
        if not 0 <= getattr(arguments, name) <= 1:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 1")
    if arguments.queue_limit_seconds <= 0:
        parser.error("--queue-limit-seconds must be above 0")
    try:
        senders = parse_pool_spec(arguments.pool)
    except PoolConfigError as error:
        parser.error(str(error))
    pool = PoolConfig(
        senders=senders,
        assignment=Assignment(arguments.sender_assignment),
        queue_limit_seconds=arguments.queue_limit_seconds,
    )
    config = SimulatorConfig(
        account_sid=arguments.account_sid,
        auth_token=arguments.auth_token,
        api_key_sid=arguments.api_key_sid,
        api_key_secret=arguments.api_key_secret,
        latency_ms=arguments.latency_ms,
        max_concurrency=arguments.max_concurrency,
        error_rate_429=arguments.error_rate_429,
        error_rate_500=arguments.error_rate_500,
        callbacks_enabled=not arguments.no_callbacks,
        callback_delay_ms=arguments.callback_delay_ms,
        slow_ms=arguments.slow_ms,
        callback_workers=arguments.callback_workers,
        callback_backlog=arguments.callback_backlog,
        pool=pool,
    )
    return arguments, config


def main(argv: Sequence[str] | None = None) -> None:
    arguments, config = parse_arguments(argv)
    pool = config.pool
    pace = (
        f"{len(pool.senders)} senders, {sum(s.segments_per_second for s in pool.senders):g} segments/s"
        if pool.senders
        else "no sender pool (unlimited)"
    )
    print(
        f"Twilio simulator on http://{arguments.host}:{arguments.port} account {config.account_sid}, "
        f"latency {config.latency_ms:g} ms, max concurrency {config.max_concurrency}, {pace}",
        flush=True,
    )
    web.run_app(
        create_app(config),
        host=arguments.host,
        port=arguments.port,
        access_log=None,  # no per-request logging: the simulator must stay cheap
        print=None,
        backlog=1024,
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
