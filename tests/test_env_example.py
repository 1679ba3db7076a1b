"""`.env.example` is the one place a new operator looks: it lists every setting, each with a one-line comment,
and copying it unchanged to `.env` gives the defaults."""

from __future__ import annotations

from pathlib import Path

from dotenv import dotenv_values

from bulksms_tools.cli import COMPOSE_VARIABLES
from shared.platform.settings import Settings, load_settings, settings_documentation

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = REPOSITORY_ROOT / ".env.example"
COMPOSE_ONLY_VARIABLES = {variable for variable, _ in COMPOSE_VARIABLES}
REGENERATE = "regenerate it with `bulksms settings --env-example > .env.example`"


def assignments() -> dict[str, str]:
    """Variable -> the comment line right above its assignment."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    found = {}
    for number, line in enumerate(lines):
        if line and not line.startswith("#") and "=" in line:
            variable = line.split("=", 1)[0].strip()
            found[variable] = lines[number - 1] if number > 0 else ""
    return found


def test_every_setting_is_listed_with_its_description() -> None:
    listed = assignments()
    for variable, default, description in settings_documentation():
        assert variable in listed, f"{variable} is missing from .env.example: {REGENERATE}"
        comment = listed[variable]
        assert comment.startswith("# "), f"{variable} needs a one-line comment right above it"
        assert description in comment, f"{variable}: comment should say {description!r}"
        if default:
            assert f"[default: {default}]" in comment


def test_nothing_but_settings_and_documented_compose_variables() -> None:
    settings_variables = {variable for variable, _, _ in settings_documentation()}
    assert set(assignments()) == settings_variables | COMPOSE_ONLY_VARIABLES, REGENERATE


def test_copying_it_unchanged_gives_the_defaults() -> None:
    assert set(dotenv_values(ENV_EXAMPLE)) == set(assignments())
    assert load_settings(environ={}, dotenv_path=ENV_EXAMPLE) == Settings()
