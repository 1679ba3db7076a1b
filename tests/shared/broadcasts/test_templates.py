"""Template parsing and rendering: placeholders, defaults, escaped braces, syntax errors."""

from __future__ import annotations

import pytest

from shared.broadcasts.templates import Placeholder, TemplateSyntaxError, parse_template


@pytest.mark.parametrize(
    ("template", "variables", "rendered"),
    [
        ("Hello", {}, "Hello"),
        ("Hello {first_name}", {"first_name": "Ann"}, "Hello Ann"),
        ("Hello {first_name|there}", {}, "Hello there"),
        ("Hello {first_name|there}", {"first_name": "Bob"}, "Hello Bob"),
        ("Hello {first_name|}!", {}, "Hello !"),  # an empty default is a default
        ("{a}{b}{a}", {"a": "1", "b": "2"}, "121"),
        ("{ name }", {"name": "x"}, "x"),  # spaces around the name are ignored
        ("Use {{code}} now", {}, "Use {code} now"),  # escaped braces
        ("{{{name}}}", {"name": "x"}, "{x}"),
        ("Hi {name|dear friend, or colleague}", {}, "Hi dear friend, or colleague"),
        ("Café {name}: {amount}€", {"name": "Zoë", "amount": "5"}, "Café Zoë: 5€"),
        ("", {}, ""),
    ],
)
def test_render(template: str, variables: dict[str, str], rendered: str) -> None:
    assert parse_template(template).render(variables) == rendered


@pytest.mark.parametrize(
    ("template", "position"),
    [
        ("Hello {", 6),
        ("Hello }", 6),
        ("Hello {first name}", 6),
        ("Price {5}", 6),
        ("{}", 0),
        ("{a|b} and {c", 10),
        ("{a}}", 3),
    ],
)
def test_syntax_errors_give_the_position(template: str, position: int) -> None:
    with pytest.raises(TemplateSyntaxError) as raised:
        parse_template(template)

    assert raised.value.position == position


def test_parts_names_and_missing_values() -> None:
    template = parse_template("Hi {first_name}, {first_name|x} owes {amount|0} to {creditor}")

    assert template.has_placeholders
    assert template.names == ("first_name", "amount", "creditor")
    assert template.parts[1] == Placeholder("first_name", None)
    assert template.missing_names({"creditor": "Bank"}) == ["first_name"]
    assert template.missing_names({}) == ["first_name", "creditor"]
    assert template.missing_names({"first_name": "Ann", "creditor": "Bank"}) == []


def test_a_message_without_placeholders_is_not_a_template() -> None:
    template = parse_template("No {{placeholders}} here")

    assert not template.has_placeholders
    assert template.literal_text == "No {placeholders} here"
