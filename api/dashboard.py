"""The dashboard: server-rendered pages under /dashboard/ for people, signed in with an API key.

- `GET /dashboard/`: the key's broadcasts, newest first, with a progress bar and counts per state.
- `GET /dashboard/broadcasts/<id>`: one broadcast: the options shown on the dashboard (shared.broadcasts.options),
  counts, rates, timing, sends and receipts over time (inline SVG), failures by Twilio error code with what the code
  means and what to do.
- `GET/POST /dashboard/sign-in`, `POST /dashboard/sign-out`.

The session is Flask's signed cookie (HttpOnly, SameSite=Lax, Secure on https, path /dashboard) holding the key's
id, never the key. Every request re-reads the key, so a revoked key is signed out at once. Every POST carries the
session's CSRF token. The same visibility rule as the API applies: a key sees only its own broadcasts.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    flash,
    g,
    has_request_context,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import BadRequest, HTTPException, NotFound
from werkzeug.wrappers.response import Response as BaseResponse

from api.context import db_session, services
from shared.broadcasts.activity import Activity, broadcast_activity, state_counts_by_broadcast
from shared.broadcasts.control import InvalidTransitionError, resume_broadcast
from shared.broadcasts.estimate import current_estimate
from shared.broadcasts.intake import InvalidCursorError, get_broadcast, list_broadcasts
from shared.broadcasts.options import View, shown_values
from shared.broadcasts.progress import broadcast_progress
from shared.messages.export import export_messages_csv
from shared.platform.api_keys import authenticate_api_key, scope_allows
from shared.platform.db import session_scope
from shared.platform.models import ApiKey, Broadcast, BroadcastStatus
from shared.platform.settings import Settings
from shared.twilio.error_codes import describe_error_code

logger = logging.getLogger(__name__)

blueprint = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates")

PAGE_SIZE = 20
SESSION_MAX_AGE_SECONDS = 12 * 3600  # signed in for a working day at most, whatever the browser keeps
CSRF_FIELD = "csrf_token"
# The page reloads itself every few seconds while messages are still being sent or receipts are still expected.
REFRESHING_STATUSES = frozenset(
    {BroadcastStatus.QUEUED, BroadcastStatus.SENDING, BroadcastStatus.SUBMITTED, BroadcastStatus.HELD}
)
_DERIVATION_LABEL = b"bulksms dashboard session key v1"

# How the progress bar groups the message states: (key, label, states, colour). The last group is the bar's track.
STATE_GROUPS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("delivered", "Delivered", ("delivered",), "#2e7d32"),
    ("awaiting", "Sent, no receipt yet", ("accepted", "sent"), "#1e88e5"),
    ("retrying", "Retry scheduled", ("retry_scheduled",), "#f9a825"),
    ("failed", "Failed or undelivered", ("failed", "undelivered"), "#c62828"),
    ("skipped", "Skipped, canceled or expired", ("skipped", "canceled", "expired"), "#757575"),
    ("waiting", "Not sent yet", ("pending", "sending", "unknown"), "#dfe3e8"),
)


# --------------------------------------------------------------------------------------------- set-up


class DashboardSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, with the Secure flag whenever the request itself came over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        configured = bool(app.config["SESSION_COOKIE_SECURE"])
        return configured or (has_request_context() and request.is_secure)


def session_secret_key(settings: Settings) -> bytes:
    """DASHBOARD_SECRET_KEY; unset, a key derived from TWILIO_AUTH_TOKEN (the same in every process); neither set,
    a random key for this process only, with a warning."""
    if settings.dashboard_secret_key:
        return settings.dashboard_secret_key.encode("utf-8")
    if settings.twilio_auth_token:
        return hmac.new(settings.twilio_auth_token.encode("utf-8"), _DERIVATION_LABEL, hashlib.sha256).digest()
    logger.warning(
        "DASHBOARD_SECRET_KEY is not set (nor TWILIO_AUTH_TOKEN to derive one from): dashboard sign-ins use a "
        "random key of this process, so they do not survive a restart and are not shared between API processes"
    )
    return secrets.token_bytes(32)


def init_dashboard(app: Flask, settings: Settings) -> None:
    app.secret_key = session_secret_key(settings)
    app.session_interface = DashboardSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="bulksms_dashboard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/dashboard",
    )
    app.register_blueprint(blueprint)


# --------------------------------------------------------------------------------------- session, CSRF


def csrf_token() -> str:
    """This session's CSRF token, created on first use; every form of the dashboard carries it."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def _check_csrf() -> None:
    expected = session.get(CSRF_FIELD)
    presented = request.form.get(CSRF_FIELD) or request.headers.get("X-CSRF-Token") or ""
    if not isinstance(expected, str) or not hmac.compare_digest(expected.encode(), presented.encode()):
        raise BadRequest("This form has expired or did not come from this site. Reload the page and try again.")


def _signed_in_key() -> ApiKey | None:
    key_id = session.get("api_key_id")
    signed_in_at = session.get("signed_in_at")
    if not isinstance(key_id, int) or not isinstance(signed_in_at, int | float):
        return None
    if time.time() - signed_in_at > SESSION_MAX_AGE_SECONDS:
        return None
    api_key = db_session().get(ApiKey, key_id)
    if api_key is None or api_key.revoked_at is not None:
        return None
    return api_key


def _safe_next(target: str | None) -> str:
    """Only a dashboard path of this site: never another host (open redirect)."""
    if target and target.startswith("/dashboard/") and "//" not in target and "\\" not in target:
        return target
    return url_for("dashboard.index")


@blueprint.before_request
def _before_request() -> BaseResponse | None:
    if request.method == "POST":
        _check_csrf()
    g.dashboard_key = None
    if request.endpoint in ("dashboard.sign_in", "dashboard.static"):
        return None
    api_key = _signed_in_key()
    if api_key is None:
        had_session = "api_key_id" in session
        session.pop("api_key_id", None)
        session.pop("signed_in_at", None)
        if had_session:
            flash("You were signed out (the key was revoked, or the sign-in expired).")
        return redirect(url_for("dashboard.sign_in", next=request.full_path.rstrip("?")))
    g.dashboard_key = api_key
    return None


@blueprint.after_request
def _security_headers(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return response


@blueprint.app_template_global("csrf_token")
def _csrf_token_global() -> str:
    return csrf_token()


@blueprint.errorhandler(HTTPException)
def _error_page(error: HTTPException) -> tuple[str, int]:
    status = error.code or 500
    return render_template("dashboard/error.html", status=status, error=error), status


# ----------------------------------------------------------------------------------------- sign-in


@blueprint.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    next_path = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if _signed_in_key() is not None:
            return redirect(next_path)
        return render_template("dashboard/sign_in.html", next_path=next_path, error=None)
    api_key = authenticate_api_key(db_session(), request.form.get("api_key", "").strip())
    if api_key is None:
        error = "That key is not valid: it is unknown, mistyped or revoked."
        return render_template("dashboard/sign_in.html", next_path=next_path, error=error), 401
    session.clear()  # a fresh session (and CSRF token) for the signed-in user
    session["api_key_id"] = api_key.id
    session["signed_in_at"] = int(time.time())
    csrf_token()
    return redirect(next_path)


@blueprint.post("/sign-out")
def sign_out() -> BaseResponse:
    session.clear()
    flash("You are signed out.")
    return redirect(url_for("dashboard.sign_in"))


# ------------------------------------------------------------------------------------------- pages


@dataclass(frozen=True, slots=True)
class StateGroup:
    key: str
    label: str
    count: int
    percent: float
    colour: str


def state_groups(counts: dict[str, int]) -> list[StateGroup]:
    total = sum(counts.values())
    groups = []
    for key, label, states, colour in STATE_GROUPS:
        count = sum(counts.get(state, 0) for state in states)
        groups.append(StateGroup(key, label, count, 100.0 * count / total if total else 0.0, colour))
    return groups


@blueprint.get("/")
def index() -> str:
    api_key: ApiKey = g.dashboard_key
    cursor = request.args.get("cursor") or None
    try:
        page = list_broadcasts(db_session(), api_key.id, cursor=cursor, limit=PAGE_SIZE)
    except InvalidCursorError:
        abort(400, "That page link is not valid; start again from the newest broadcasts.")
    counts = state_counts_by_broadcast(db_session(), [broadcast.id for broadcast in page.items])
    rows = [
        {
            "broadcast": broadcast,
            "total": sum(counts[broadcast.id].values()),
            "groups": state_groups(counts[broadcast.id]),
        }
        for broadcast in page.items
    ]
    return render_template("dashboard/index.html", rows=rows, next_cursor=page.next_cursor, first_page=cursor is None)


def _own_broadcast(broadcast_id: str) -> Broadcast:
    """The signed-in key's broadcast with this id, or the 404 page (another key's broadcast looks the same)."""
    api_key: ApiKey = g.dashboard_key
    try:
        parsed_id = uuid.UUID(broadcast_id)
    except ValueError:
        raise NotFound("No broadcast of yours has that id.") from None
    broadcast = get_broadcast(db_session(), api_key.id, parsed_id)
    if broadcast is None:
        raise NotFound("No broadcast of yours has that id.")
    return broadcast


@blueprint.get("/broadcasts/<broadcast_id>/messages.csv")
def messages_export(broadcast_id: str) -> Response:
    """The same streamed CSV as `GET /v1/broadcasts/{id}/messages.csv`, for a browser signed in with its session
    cookie (the API endpoint wants a Bearer key, which a link cannot carry)."""
    broadcast = _own_broadcast(broadcast_id)
    session_factory = services().session_factory

    def rows() -> Iterator[str]:
        # Its own session: the request's is closed when the view returns, before the body is streamed.
        with session_scope(session_factory) as export_session:
            yield from export_messages_csv(export_session, broadcast.id)

    return Response(
        rows(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="broadcast-{broadcast.id}.csv"'},
    )


def _chart_window(broadcast: Broadcast, now: datetime) -> tuple[datetime, datetime] | None:
    if broadcast.first_send_at is None:
        return None
    start = broadcast.first_send_at
    if broadcast.status in REFRESHING_STATUSES or broadcast.status == BroadcastStatus.PAUSED:
        end = now
    else:
        end = max(moment for moment in (start, broadcast.last_send_at, broadcast.last_receipt_at) if moment)
    return start, max(start, end)


@blueprint.get("/broadcasts/<broadcast_id>")
def broadcast_page(broadcast_id: str) -> str:
    broadcast = _own_broadcast(broadcast_id)
    progress = broadcast_progress(db_session(), broadcast.id)
    failures = [
        {"code": code, "count": count, "info": describe_error_code(code)} for code, count in progress.error_codes
    ]
    window = _chart_window(broadcast, datetime.now(UTC))
    chart = activity_chart(broadcast_activity(db_session(), broadcast.id, *window)) if window else None
    return render_template(
        "dashboard/broadcast.html",
        broadcast=broadcast,
        options={name: value for name, value in shown_values(broadcast, View.DASHBOARD).items() if value is not None},
        progress=progress,
        summary=progress.summary(),
        groups=state_groups(progress.counts),
        state_rows=[(state, progress.counts[state]) for _, _, states, _ in STATE_GROUPS for state in states],
        failures=failures,
        chart=chart,
        export_url=url_for("dashboard.messages_export", broadcast_id=broadcast.id),
        auto_refresh=broadcast.status in REFRESHING_STATUSES,
        timing=_timing(broadcast, progress.submitted),
        estimate=current_estimate(
            broadcast, progress.unsent, services().settings, services().redis_client, datetime.now(UTC)
        ),
    )


@blueprint.post("/broadcasts/<broadcast_id>/resume")
def resume(broadcast_id: str) -> BaseResponse:
    """Resume a held (circuit breaker) or paused broadcast, as `POST /v1/broadcasts/{id}/resume` does."""
    broadcast = _own_broadcast(broadcast_id)
    if not scope_allows(g.dashboard_key.scope, "send"):
        flash("This key may only read: resuming needs a key with the send scope.")
        return redirect(url_for("dashboard.broadcast_page", broadcast_id=broadcast.id))
    try:
        resume_broadcast(
            db_session(),
            services().redis_client,
            services().celery_app,
            broadcast.id,
            services().settings.send_window_chunks,
        )
        flash("Resumed: sending goes on.")
    except InvalidTransitionError as error:
        db_session().rollback()
        flash(str(error))
    return redirect(url_for("dashboard.broadcast_page", broadcast_id=broadcast.id))


def _timing(broadcast: Broadcast, submitted: int) -> dict[str, Any]:
    sending_time = None
    rate = None
    if broadcast.first_send_at and broadcast.last_send_at:
        sending_time = broadcast.last_send_at - broadcast.first_send_at
        seconds = sending_time.total_seconds()
        rate = submitted / seconds if seconds >= 1 else None
    return {"sending_time": sending_time, "send_rate": rate}


# ------------------------------------------------------------------------------------------- chart

CHART_WIDTH, CHART_HEIGHT = 900, 260
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 56, 884, 16, 220
MAX_X_LABELS = 8


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True, slots=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    sends: list[Bar]
    receipts: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    bucket_label: str
    total_sends: int
    total_receipts: int
    plot: tuple[int, int, int, int]  # left, right, top, bottom


def _nice_ceiling(value: int) -> int:
    """1, 2, 5, 10, 20, 50, ... the first not below `value`."""
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= value:
                return step * magnitude
        magnitude *= 10


def _duration_label(width: timedelta) -> str:
    seconds = int(width.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400} day" + ("s" if seconds > 86400 else "")
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def activity_chart(activity: Activity) -> Chart:
    """Bar positions of sends and receipts per bucket, in SVG user units (pure; the template draws them)."""
    buckets = activity.buckets
    highest = _nice_ceiling(max([1] + [max(bucket.sends, bucket.receipts) for bucket in buckets]))
    plot_width = PLOT_RIGHT - PLOT_LEFT
    plot_height = PLOT_BOTTOM - PLOT_TOP
    slot = plot_width / len(buckets)
    bar_width = max(slot * 0.4, 0.5)
    time_format = "%H:%M:%S" if activity.width < timedelta(minutes=1) else "%H:%M"
    if activity.buckets[-1].start - activity.start >= timedelta(days=1):
        time_format = "%d %b %H:%M"
    sends: list[Bar] = []
    receipts: list[Bar] = []
    x_ticks: list[Tick] = []
    label_every = max(1, -(-len(buckets) // MAX_X_LABELS))
    for index, bucket in enumerate(buckets):
        left = PLOT_LEFT + index * slot + slot * 0.1
        when = bucket.start.astimezone(UTC).strftime(time_format)
        for bars, value, offset, noun in (
            (sends, bucket.sends, 0.0, "sent"),
            (receipts, bucket.receipts, 1.0, "receipts"),
        ):
            height = plot_height * value / highest
            bars.append(
                Bar(left + offset * bar_width, PLOT_BOTTOM - height, bar_width, height, f"{when}: {value:,} {noun}")
            )
        if index % label_every == 0:
            x_ticks.append(Tick(PLOT_LEFT + index * slot, when))
    shares = (0, 0.5, 1) if highest % 2 == 0 else (0, 1)
    y_ticks = [Tick(PLOT_BOTTOM - plot_height * share, f"{int(highest * share):,}") for share in shares]
    return Chart(
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        sends=sends,
        receipts=receipts,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        bucket_label=_duration_label(activity.width),
        total_sends=activity.total_sends,
        total_receipts=activity.total_receipts,
        plot=(PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM),
    )


# ------------------------------------------------------------------------------------------- filters


@blueprint.app_template_filter("utc")
def _format_utc(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


@blueprint.app_template_filter("duration")
def _format_duration(span: timedelta | None) -> str:
    if span is None:
        return "—"
    seconds = int(span.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{span.total_seconds():.1f} s"


@blueprint.app_template_filter("percent")
def _format_percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} %"
