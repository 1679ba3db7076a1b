"""Every declared broadcast option reaches every place derived from the option list (shared.broadcasts.options).

A place that stops following the list (a field written by hand, a list copied) fails here for the option it misses.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from api.csv_intake import INTEGER_OPTIONS, LIST_OPTIONS, SCALAR_OPTIONS, options_schema
from api.openapi import BROADCAST_EXAMPLE
from api.schemas import BroadcastDetailSchema, BroadcastRequestSchema, BroadcastSchema, BroadcastsQuerySchema
from shared.broadcasts.options import BROADCAST_OPTIONS, BroadcastOption, CsvForm, View, options_markdown_table
from shared.messages.export import EXPORT_COLUMNS

API_DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
# Names the views use for something else than the option: never declared shown, and not checked as absent.
VIEW_NAMES_OF_THEIR_OWN = {
    "message": "the content report (characters, encoding, segments...)",
    "recipients": "the recipient counts",
    "dry_run": "added, true, to a dry run's answer",
}
OPTIONS = pytest.mark.parametrize("option", BROADCAST_OPTIONS, ids=lambda option: option.name)


@OPTIONS
def test_the_json_request_takes_the_option_and_openapi_describes_it(
    option: BroadcastOption, client: FlaskClient
) -> None:
    assert option.name in BroadcastRequestSchema().fields
    document = client.get("/openapi.json").get_json()
    described = document["components"]["schemas"]["BroadcastRequest"]["properties"][option.name]
    assert described.get("description")


@OPTIONS
def test_a_csv_upload_takes_the_option_by_its_declared_names(option: BroadcastOption, client: FlaskClient) -> None:
    upload_names = set(SCALAR_OPTIONS) | set(LIST_OPTIONS)
    if option.csv in (CsvForm.FILE, CsvForm.NOT_ACCEPTED):
        assert option.name not in options_schema.fields
        assert option.name not in upload_names
        return
    assert option.name in options_schema.fields
    assert set(option.csv_names()) <= upload_names
    assert (option.name in INTEGER_OPTIONS) is (option.csv is CsvForm.INTEGER)
    assert (option.name in LIST_OPTIONS) is (option.csv is CsvForm.LIST)
    document = client.get("/openapi.json").get_json()
    form = document["paths"]["/v1/broadcasts"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert set(option.csv_names()) <= set(form["schema"]["properties"])


@OPTIONS
def test_the_views_show_the_option_where_it_is_declared_shown(option: BroadcastOption, client: FlaskClient) -> None:
    if option.name in VIEW_NAMES_OF_THEIR_OWN:
        assert not option.shown_in
        return
    document = client.get("/openapi.json").get_json()
    components = document["components"]["schemas"]
    in_every_view = View.BROADCAST in option.shown_in
    in_detail = in_every_view or View.BROADCAST_DETAIL in option.shown_in
    assert (option.name in BroadcastSchema().fields) is in_every_view
    assert (option.name in components["Broadcast"]["properties"]) is in_every_view
    assert (option.name in BROADCAST_EXAMPLE) is in_every_view
    assert (option.name in BroadcastDetailSchema().fields) is in_detail
    assert (option.name in components["BroadcastDetail"]["properties"]) is in_detail
    assert (option.name in EXPORT_COLUMNS) is (View.MESSAGES_EXPORT in option.shown_in)


@OPTIONS
def test_the_list_filters_on_the_option_when_it_is_filterable(option: BroadcastOption, client: FlaskClient) -> None:
    assert (option.name in BroadcastsQuerySchema().fields) is option.filterable
    document = client.get("/openapi.json").get_json()
    parameters = {parameter["name"] for parameter in document["paths"]["/v1/broadcasts"]["get"]["parameters"]}
    assert (option.name in parameters) is option.filterable


def test_docs_api_md_has_the_request_table_of_the_option_list() -> None:
    assert options_markdown_table() in API_DOCS.read_text(), (
        "docs/api.md's request table is out of date: replace it with the output of "
        "`python -m shared.broadcasts.options`"
    )
