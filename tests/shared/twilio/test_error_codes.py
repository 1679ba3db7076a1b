"""The Twilio error-code table: one policy per code, read by the gateway and the receipts path, and by the README."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulksms_tools.cli import error_codes_markdown_table
from shared.platform.settings import Settings, load_settings
from shared.twilio.error_codes import (
    CALLBACK_OPT_OUT_CODES,
    DEFAULT_DELIVERY_RETRY_CODES,
    ERROR_CODES,
    SEND_OPT_OUT_CODES,
    CallbackErrorBehaviour,
    SendErrorBehaviour,
    codes_at_send,
    codes_in_callbacks,
    describe_error_code,
    send_error_behaviour,
)

REPOSITORY_ROOT = Path(__file__).resolve().parents[3]
RETRY = SendErrorBehaviour.RETRY_WITH_BACKOFF
AMBIGUOUS = SendErrorBehaviour.AMBIGUOUS
PERMANENT = SendErrorBehaviour.PERMANENT
OPT_OUT = SendErrorBehaviour.OPT_OUT


@pytest.mark.parametrize(
    ("code", "http_status", "behaviour"),
    [
        # A 4xx refusal follows the code's row.
        (20003, 401, PERMANENT),
        (21211, 400, PERMANENT),
        (21610, 400, OPT_OUT),
        (20429, 400, RETRY),
        # A 429 was never processed and a listed "never processed" code says so too, whatever comes with it.
        (20429, 429, RETRY),
        (None, 429, RETRY),
        (21211, 429, RETRY),
        (20429, 503, RETRY),
        # A 5xx may have been processed: reconciled whatever code it carries.
        (None, 500, AMBIGUOUS),
        (21610, 500, AMBIGUOUS),
        (20500, 503, AMBIGUOUS),
        # Codes the table does not list, or no code: any other 4xx is permanent.
        (21602, 400, PERMANENT),
        (None, 404, PERMANENT),
    ],
)
def test_send_error_behaviour_reads_the_row_then_the_http_status(
    code: int | None, http_status: int, behaviour: SendErrorBehaviour
) -> None:
    assert send_error_behaviour(code, http_status) is behaviour


@pytest.mark.parametrize("behaviour", [*SendErrorBehaviour, *CallbackErrorBehaviour])
def test_every_behaviour_says_in_the_readme_table_what_bulksms_does(
    behaviour: SendErrorBehaviour | CallbackErrorBehaviour,
) -> None:
    assert behaviour.summary.strip()
    assert behaviour.summary in error_codes_markdown_table()


def test_request_codes_say_what_happens_at_send_and_carrier_codes_in_a_callback() -> None:
    for entry in ERROR_CODES.values():
        assert entry.title and entry.meaning and entry.action, entry.code
        if entry.code < 30000:
            assert entry.on_send is not None, entry.code
        else:
            assert (entry.on_send, entry.on_callback is not None) == (None, True), entry.code


def test_21610_is_the_one_opt_out_code_at_send_and_in_callbacks() -> None:
    assert SEND_OPT_OUT_CODES == CALLBACK_OPT_OUT_CODES == {21610}
    assert codes_at_send(OPT_OUT) == (21610,)


def test_the_delivery_retry_setting_defaults_to_the_tables_delivery_retry_codes() -> None:
    assert DEFAULT_DELIVERY_RETRY_CODES == codes_in_callbacks(CallbackErrorBehaviour.DELIVERY_RETRY) == (30003, 30008)
    assert Settings().delivery_retry_error_codes == "30003,30008"
    assert load_settings(environ={}, dotenv_path=None).delivery_retry_codes == {30003, 30008}
    # The setting still replaces the table's default.
    configured = load_settings(environ={"DELIVERY_RETRY_ERROR_CODES": "30005"}, dotenv_path=None)
    assert configured.delivery_retry_codes == {30005}


def test_the_dashboard_lookup_still_gives_meaning_and_action() -> None:
    info = describe_error_code(30007)
    assert info is not None and info.meaning and info.action
    assert info.reference_url == "https://www.twilio.com/docs/api/errors/30007"
    assert describe_error_code(None) is None and describe_error_code(1) is None


def test_the_markdown_table_has_one_row_per_code_and_one_for_the_rest() -> None:
    lines = error_codes_markdown_table().splitlines()
    assert len(lines) == 2 + len(ERROR_CODES) + 1
    assert all(f"[{code}](" in "\n".join(lines) for code in ERROR_CODES)
    assert lines[-1].startswith("| any other code |")
    assert "`DELIVERY_RETRY_ERROR_CODES`" in lines[-1]


def test_readme_troubleshooting_table_matches_the_error_code_table() -> None:
    readme = (REPOSITORY_ROOT / "README.md").read_text()
    assert error_codes_markdown_table() in readme, (
        "README.md's troubleshooting table is out of date: replace it with the output of `bulksms error-codes`"
    )
