"""The base class of every bulksms Celery task: database sessions, what an outage of PostgreSQL or Redis means for
the task, and the ids on its log lines. A task body loads by id, calls one function in `shared`, and is done.

Each task declares `on_infrastructure_error` when it is registered with `@worker_task`:
- `RetryLater()`: the work is owed and nothing else would do it (a chunk's pending recipients, a completion
  callback), so the task is retried after a jittered countdown, for as long as the outage lasts;
- `SkipThisRun("...")`: beat runs the task again within seconds and that run does the same work, so this run logs
  a warning saying what it did not do, and ends normally.
A task registered without one fails when the worker loads its tasks, naming itself.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

from celery import Task
from sqlalchemy.orm import Session, sessionmaker

from shared.platform.db import session_scope
from shared.platform.infrastructure_errors import INFRASTRUCTURE_ERRORS
from shared.platform.logging_config import connect_celery_task_context
from shared.sending.chunks import SendingResources
from worker.app import celery_app, sending_resources

logger = logging.getLogger(__name__)

# Soon enough to catch a database restart or a Redis failover; jittered so the chunks of a broadcast do not all
# come back at the same moment.
INFRASTRUCTURE_RETRY_COUNTDOWN_SECONDS = (2.0, 10.0)


@dataclass(frozen=True)
class RetryLater:
    """The work is owed and no later run would do it: retry the task after a random countdown in this range."""

    countdown_seconds: tuple[float, float] = INFRASTRUCTURE_RETRY_COUNTDOWN_SECONDS


@dataclass(frozen=True)
class SkipThisRun:
    """Beat runs the task again shortly and that run does the same work: log a warning and end this run."""

    not_done: str  # what this run did not do, as the warning says it: "scheduled broadcasts not released"


InfrastructureErrorPolicy = RetryLater | SkipThisRun


class BulksmsTask(Task):
    """A bulksms task: `self.session()` per unit of work, and the declared policy applied to infrastructure errors.

    The task id, task name and broadcast id are bound to every log line of the run by the Celery signals connected
    at the end of this module.
    """

    on_infrastructure_error: ClassVar[InfrastructureErrorPolicy]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(getattr(cls, "on_infrastructure_error", None), RetryLater | SkipThisRun):
            raise TypeError(
                f"task {getattr(cls, 'name', cls.__name__)!r} must declare on_infrastructure_error: "
                "RetryLater() or SkipThisRun(...)"
            )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # `self.run`, not `super().__call__`: Celery's __call__ pushes a fresh request without the task id and
        # delivery info that the worker already pushed, and `self.retry` needs them.
        try:
            return self.run(*args, **kwargs)
        except INFRASTRUCTURE_ERRORS as error:
            policy = self.on_infrastructure_error
            if isinstance(policy, SkipThisRun):
                logger.warning("%s this run: %s", policy.not_done, describe_error(error))
                return None
            countdown = random.uniform(*policy.countdown_seconds)
            logger.warning(
                "%s(%s): %s; retrying in %.1fs",
                self.name,
                ", ".join([*map(repr, args), *(f"{name}={value!r}" for name, value in kwargs.items())]),
                describe_error(error),
                countdown,
            )
            raise self.retry(countdown=countdown) from error

    @property
    def resources(self) -> SendingResources:
        """This worker process's event loop, Twilio gateway, Redis client and engine (opened after the fork)."""
        return sending_resources()

    @property
    def session_factory(self) -> sessionmaker[Session]:
        """For service functions that open one session per batch themselves."""
        return sending_resources().session_factory

    def session(self) -> AbstractContextManager[Session]:
        """One unit of work: committed when the block ends, rolled back if it raises, closed either way."""
        return session_scope(sending_resources().session_factory)

    def broadcast_uuid(self, broadcast_id: object) -> uuid.UUID | None:
        """The broadcast id a task message carries; a malformed one is logged and the message dropped (None),
        since retrying it could never succeed."""
        try:
            return uuid.UUID(str(broadcast_id))
        except ValueError:
            logger.error("%s with a malformed broadcast id %r: dropped", self.name, broadcast_id)
            return None


def describe_error(error: BaseException) -> str:
    """The error's type and the first line of its message: enough to tell a refused connection from a timeout,
    without the statement and parameters SQLAlchemy appends on the following lines."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def worker_task(
    name: str, *, on_infrastructure_error: InfrastructureErrorPolicy, **options: Any
) -> Callable[[Callable[..., Any]], BulksmsTask]:
    """Register a task on the worker's Celery app under `name` (a constant of shared.platform.task_queue), bound
    (its first argument is the task) and built on BulksmsTask with the given policy."""
    return celery_app.task(
        name=name, base=BulksmsTask, bind=True, on_infrastructure_error=on_infrastructure_error, **options
    )


# Signals rather than a method: they also surround Celery's own lines about the task ("succeeded", "retry").
connect_celery_task_context()
