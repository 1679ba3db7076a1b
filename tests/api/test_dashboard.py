"""The dashboard through Flask's test client: sign-in, CSRF, visibility, and what each page shows.

The same pages in a real browser: test_dashboard_browser.py.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.dashboard import activity_chart, session_secret_key
from shared.broadcasts.activity import broadcast_activity, bucket_width
from shared.platform.api_keys import create_api_key, revoke_api_key
from shared.platform.models import BroadcastStatus
from shared.platform.settings import Settings
from shared.twilio.error_codes import ERROR_CODES, describe_error_code
from tests.api.dashboard_data import SignedKey, new_key, seed_broadcast


def csrf_from(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def sign_in(client: FlaskClient, plaintext: str, next_path: str | None = None) -> None:
    page = client.get("/dashboard/sign-in")
    form = {"csrf_token": csrf_from(page.get_data(as_text=True)), "api_key": plaintext}
    if next_path:
        form["next"] = next_path
    response = client.post("/dashboard/sign-in", data=form)
    assert response.status_code == 302, response.get_data(as_text=True)


@pytest.fixture
def key(db_session: Session) -> SignedKey:
    return new_key(db_session, "newsroom")


@pytest.fixture
def signed_in(client: FlaskClient, key: SignedKey) -> FlaskClient:
    sign_in(client, key.plaintext)
    return client


# ------------------------------------------------------------------------------------------- sign-in


def test_signed_out_visitors_are_sent_to_the_sign_in_page(client: FlaskClient, db_session: Session) -> None:
    for path in ("/dashboard/", f"/dashboard/broadcasts/{uuid.uuid4()}"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/dashboard/sign-in?next=")


def test_a_wrong_key_shows_an_error_and_signs_nobody_in(client: FlaskClient, key: SignedKey) -> None:
    page = client.get("/dashboard/sign-in")
    response = client.post(
        "/dashboard/sign-in",
        data={"csrf_token": csrf_from(page.get_data(as_text=True)), "api_key": key.plaintext + "x"},
    )
    assert response.status_code == 401
    assert "That key is not valid" in response.get_data(as_text=True)
    assert client.get("/dashboard/").status_code == 302


def test_sign_in_sets_a_cookie_that_holds_no_key(client: FlaskClient, key: SignedKey) -> None:
    page = client.get("/dashboard/sign-in")
    response = client.post(
        "/dashboard/sign-in",
        data={"csrf_token": csrf_from(page.get_data(as_text=True)), "api_key": key.plaintext},
    )
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain http here
    secret_part = key.plaintext.split("_", 2)[2]
    assert secret_part not in cookie and key.api_key.prefix not in cookie
    assert client.get("/dashboard/").status_code == 200


def test_the_cookie_is_secure_over_https(app: Flask, key: SignedKey) -> None:
    client = app.test_client()
    page = client.get("/dashboard/sign-in", base_url="https://dashboard.example")
    assert "Secure" in page.headers["Set-Cookie"]


def test_sign_in_returns_to_the_page_asked_for_but_never_to_another_site(client: FlaskClient, key: SignedKey) -> None:
    page = client.get("/dashboard/sign-in")
    token = csrf_from(page.get_data(as_text=True))
    for asked, expected in (
        ("/dashboard/broadcasts/abc", "/dashboard/broadcasts/abc"),
        ("//evil.example/", "/dashboard/"),
    ):
        response = client.post(
            "/dashboard/sign-in", data={"csrf_token": token, "api_key": key.plaintext, "next": asked}
        )
        assert response.headers["Location"] == expected
        token = csrf_from(client.get("/dashboard/").get_data(as_text=True))


def test_a_post_without_the_csrf_token_is_refused(client: FlaskClient, key: SignedKey) -> None:
    client.get("/dashboard/sign-in")  # the session exists, with its token
    refused = client.post("/dashboard/sign-in", data={"api_key": key.plaintext})
    assert refused.status_code == 400
    assert "did not come from this site" in refused.get_data(as_text=True)
    wrong = client.post("/dashboard/sign-in", data={"api_key": key.plaintext, "csrf_token": "guess"})
    assert wrong.status_code == 400
    assert client.get("/dashboard/").status_code == 302  # still signed out


def test_sign_out_needs_the_token_and_ends_the_session(signed_in: FlaskClient) -> None:
    assert signed_in.post("/dashboard/sign-out").status_code == 400
    assert signed_in.get("/dashboard/").status_code == 200
    token = csrf_from(signed_in.get("/dashboard/").get_data(as_text=True))
    response = signed_in.post("/dashboard/sign-out", data={"csrf_token": token})
    assert response.status_code == 302
    assert signed_in.get("/dashboard/").status_code == 302


def test_a_revoked_key_is_signed_out_on_the_next_request(
    signed_in: FlaskClient, key: SignedKey, db_session: Session
) -> None:
    assert signed_in.get("/dashboard/").status_code == 200
    revoke_api_key(db_session, key.api_key.id)
    response = signed_in.get("/dashboard/")
    assert response.status_code == 302
    page = signed_in.get(response.headers["Location"])
    assert "You were signed out" in page.get_data(as_text=True)
    assert signed_in.get("/dashboard/").status_code == 302


# ------------------------------------------------------------------------------------------- pages


def test_the_list_shows_the_keys_broadcasts_with_their_counts(
    signed_in: FlaskClient, key: SignedKey, db_session: Session
) -> None:
    mine = seed_broadcast(db_session, key.api_key, body="Mine: polls open")
    other = seed_broadcast(db_session, new_key(db_session, "other").api_key, body="Theirs: do not show")
    html = signed_in.get("/dashboard/").get_data(as_text=True)
    assert "Mine: polls open" in html and str(mine.id) in html
    assert "Theirs" not in html and str(other.id) not in html
    assert "Delivered 40" in html
    assert "Sent, no receipt yet 20" in html
    assert "Failed or undelivered 24" in html
    assert "Not sent yet 16" in html
    assert 'class="bar"' in html and "width: 40.000%" in html


def test_the_list_is_newest_first_and_paginated(signed_in: FlaskClient, key: SignedKey, db_session: Session) -> None:
    now = datetime.now(UTC)
    for index in range(22):
        seed_broadcast(db_session, key.api_key, body=f"Broadcast number {index:02d}", started=now)
    first = signed_in.get("/dashboard/").get_data(as_text=True)
    assert first.index("Broadcast number 21") < first.index("Broadcast number 20")
    assert "Broadcast number 01" not in first
    older = re.search(r'href="(/dashboard/\?cursor=[^"]+)"', first)
    assert older
    second = signed_in.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert "Broadcast number 01" in second and "Broadcast number 00" in second and "Broadcast number 21" not in second
    assert signed_in.get("/dashboard/?cursor=garbage").status_code == 400


def test_another_keys_broadcast_is_not_found(signed_in: FlaskClient, db_session: Session) -> None:
    other = seed_broadcast(db_session, new_key(db_session, "other").api_key)
    for path in (
        f"/dashboard/broadcasts/{other.id}",
        f"/dashboard/broadcasts/{uuid.uuid4()}",
        "/dashboard/broadcasts/x",
    ):
        response = signed_in.get(path)
        assert response.status_code == 404
        assert "No broadcast of yours has that id" in response.get_data(as_text=True)


def test_the_broadcast_page_explains_failures_by_code(
    signed_in: FlaskClient, key: SignedKey, db_session: Session
) -> None:
    broadcast = seed_broadcast(db_session, key.api_key, status=BroadcastStatus.COMPLETED)
    html = signed_in.get(f"/dashboard/broadcasts/{broadcast.id}").get_data(as_text=True)
    rows = re.findall(r'<tr class="failure" data-code="(\d*)">(.*?)</tr>', html, re.S)
    assert [code for code, _ in rows] == ["21610", "30007", "30005", "39999"]
    by_code = dict(rows)
    for code in (21610, 30007, 30005):
        info = ERROR_CODES[code]
        assert info.title in by_code[str(code)] and info.action in by_code[str(code)]
    assert ">10<" in by_code["21610"] and ">8<" in by_code["30007"]
    assert "no notes on" in by_code["39999"]
    assert "62.5 %" in html  # delivery rate: 40 delivered of 64 final
    assert 'id="activity-chart"' in html and 'class="send"' in html and 'class="receipt"' in html


def test_the_broadcast_page_shows_the_client_reference_escaped(signed_in: FlaskClient, key: SignedKey) -> None:
    reference = "<b>crm</b> & spring"
    body = {"message": "hi", "recipients": ["+15550000001"], "client_reference": reference}
    created = signed_in.post("/v1/broadcasts", json=body, headers={"Authorization": f"Bearer {key.plaintext}"})
    plain = signed_in.post(
        "/v1/broadcasts",
        json={"message": "hi", "recipients": ["+15550000002"]},
        headers={"Authorization": f"Bearer {key.plaintext}"},
    )
    assert (created.status_code, plain.status_code) == (202, 202)

    html = signed_in.get(f"/dashboard/broadcasts/{created.get_json()['id']}").get_data(as_text=True)
    without = signed_in.get(f"/dashboard/broadcasts/{plain.get_json()['id']}").get_data(as_text=True)

    row = re.search(r'<tr class="option-client_reference"><th>(.*?)</th><td>(.*?)</td></tr>', html)
    assert row is not None
    assert row.groups() == ("client reference", "&lt;b&gt;crm&lt;/b&gt; &amp; spring")
    assert "option-client_reference" not in without


def test_the_page_refreshes_itself_only_while_the_broadcast_runs(
    signed_in: FlaskClient, key: SignedKey, db_session: Session
) -> None:
    refresh = '<meta http-equiv="refresh" content="5">'
    for status, expected in (
        (BroadcastStatus.QUEUED, True),
        (BroadcastStatus.SENDING, True),
        (BroadcastStatus.SUBMITTED, True),
        (BroadcastStatus.COMPLETED, False),
        (BroadcastStatus.CANCELED, False),
    ):
        broadcast = seed_broadcast(db_session, key.api_key, status=status)
        html = signed_in.get(f"/dashboard/broadcasts/{broadcast.id}").get_data(as_text=True)
        assert (refresh in html) is expected, status


def test_the_export_link_downloads_the_messages_with_the_session_cookie(
    signed_in: FlaskClient, key: SignedKey, db_session: Session
) -> None:
    broadcast = seed_broadcast(db_session, key.api_key)
    link = f"/dashboard/broadcasts/{broadcast.id}/messages.csv"
    assert f'href="{link}"' in signed_in.get(f"/dashboard/broadcasts/{broadcast.id}").get_data(as_text=True)

    response = signed_in.get(link)

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert f"broadcast-{broadcast.id}.csv" in response.headers["Content-Disposition"]
    lines = response.get_data(as_text=True).strip().splitlines()
    assert lines[0].startswith("number,state")
    assert (
        len(lines) - 1
        == db_session.execute(
            text("SELECT count(*) FROM messages WHERE broadcast_id = :id"), {"id": broadcast.id}
        ).scalar_one()
    )


def test_the_export_of_another_keys_broadcast_is_not_found(signed_in: FlaskClient, db_session: Session) -> None:
    other = seed_broadcast(db_session, new_key(db_session, "other").api_key)
    assert signed_in.get(f"/dashboard/broadcasts/{other.id}/messages.csv").status_code == 404


def test_pages_carry_protective_headers(signed_in: FlaskClient) -> None:
    response = signed_in.get("/dashboard/")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"


# -------------------------------------------------------------------------------- pieces, no browser


def test_the_timeline_counts_every_send_and_receipt_in_bounded_buckets(db_session: Session, key: SignedKey) -> None:
    started = datetime(2026, 11, 29, 16, 0, 7, tzinfo=UTC)
    broadcast = seed_broadcast(db_session, key.api_key, started=started)
    activity = broadcast_activity(db_session, broadcast.id, started, started + timedelta(seconds=170))
    assert activity.width == timedelta(seconds=5)
    assert activity.start == datetime(2026, 11, 29, 16, 0, 5, tzinfo=UTC)
    assert len(activity.buckets) <= 60
    assert activity.total_sends == 84 and activity.total_receipts == 52  # 40 delivered + 12 undelivered
    # A window shorter than the data: nothing is lost, the edges take the rest.
    clipped = broadcast_activity(db_session, broadcast.id, started, started + timedelta(seconds=30))
    assert clipped.total_sends == 84 and clipped.total_receipts == 52
    chart = activity_chart(activity)
    assert len(chart.sends) == len(activity.buckets) and max(bar.height for bar in chart.sends) > 0


@pytest.mark.parametrize(
    ("span", "width"),
    [
        (timedelta(0), timedelta(seconds=1)),
        (timedelta(seconds=50), timedelta(seconds=1)),
        (timedelta(minutes=5), timedelta(seconds=10)),
        (timedelta(hours=2), timedelta(minutes=5)),
        (timedelta(days=3), timedelta(hours=2)),
        (timedelta(days=1000), timedelta(days=21)),
    ],
)
def test_bucket_widths_keep_the_chart_under_sixty_bars(span: timedelta, width: timedelta) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert bucket_width(start, start + span) == width
    assert span / width < 60


def test_every_code_the_brief_names_has_advice() -> None:
    for code in (
        21211,
        21408,
        21610,
        21612,
        21614,
        21617,
        20003,
        20429,
        30001,
        30003,
        30004,
        30005,
        30006,
        30007,
        30008,
    ):
        info = describe_error_code(code)
        assert info is not None and info.meaning and info.action, code
    assert describe_error_code(None) is None and describe_error_code(1) is None


def test_the_session_key_is_stable_when_configured_or_derivable(settings: Settings) -> None:
    configured = settings.replace(dashboard_secret_key="s3cret")
    assert session_secret_key(configured) == b"s3cret"
    derived = settings.replace(dashboard_secret_key=None, twilio_auth_token="token")
    assert session_secret_key(derived) == session_secret_key(derived) != b"token"
    random = settings.replace(dashboard_secret_key=None, twilio_auth_token=None)
    assert session_secret_key(random) != session_secret_key(random)


def test_a_test_keys_broadcasts_are_marked_test_on_both_pages(app: Flask, db_session: Session) -> None:
    """A test key's broadcast, as intake stores it (`test` set from the key), carries a "test" badge; an ordinary
    key's broadcast does not."""
    for is_test in (True, False):
        _, plaintext = create_api_key(db_session, f"key {is_test}", is_test=is_test)
        client = app.test_client()  # a browser of its own
        sent = client.post(
            "/v1/broadcasts",
            json={"message": "badge?", "recipients": ["+15550000001"]},
            headers={"Authorization": f"Bearer {plaintext}"},
        )
        assert sent.status_code == 202
        sign_in(client, plaintext)
        listed = client.get("/dashboard/").get_data(as_text=True)
        page = client.get(f"/dashboard/broadcasts/{sent.get_json()['id']}").get_data(as_text=True)
        assert ('class="status status-test"' in listed) is is_test
        assert ('id="test"' in page) is is_test


def test_a_broadcast_held_by_its_circuit_breaker_says_why_and_can_be_resumed_here(
    signed_in: FlaskClient, key: SignedKey, db_session: Session
) -> None:
    broadcast = seed_broadcast(db_session, key.api_key, status=BroadcastStatus.HELD)
    reason = "circuit breaker: 60 of the last 200 outcomes failed (30007 x60)"
    db_session.execute(
        text("UPDATE broadcasts SET held_reason = :reason, first_send_at = now() WHERE id = :id"),
        {"reason": reason, "id": broadcast.id},
    )
    db_session.commit()
    page = signed_in.get(f"/dashboard/broadcasts/{broadcast.id}").get_data(as_text=True)
    assert reason in page and "It waits for an operator" in page and 'id="resume"' in page

    response = signed_in.post(f"/dashboard/broadcasts/{broadcast.id}/resume", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 302
    db_session.expire_all()
    status, held_reason = db_session.execute(
        text("SELECT status, held_reason FROM broadcasts WHERE id = :id"), {"id": broadcast.id}
    ).one()
    assert (status, held_reason) == ("sending", None)
    again = signed_in.post(f"/dashboard/broadcasts/{broadcast.id}/resume", data={"csrf_token": csrf_from(page)})
    assert "cannot be resumed" in signed_in.get(again.headers["Location"]).get_data(as_text=True)


def test_a_read_only_key_cannot_resume_a_held_broadcast_from_the_dashboard(app: Flask, db_session: Session) -> None:
    api_key, plaintext = create_api_key(db_session, "watcher", scope="read")
    broadcast = seed_broadcast(db_session, api_key, status=BroadcastStatus.HELD)
    client = app.test_client()
    sign_in(client, plaintext)
    page = client.get(f"/dashboard/broadcasts/{broadcast.id}").get_data(as_text=True)

    response = client.post(f"/dashboard/broadcasts/{broadcast.id}/resume", data={"csrf_token": csrf_from(page)})
    assert "resuming needs a key with the send scope" in client.get(response.headers["Location"]).get_data(as_text=True)
    db_session.expire_all()
    status = db_session.execute(text("SELECT status FROM broadcasts WHERE id = :id"), {"id": broadcast.id}).scalar()
    assert status == "held"
