"""Message templates: `{first_name}` placeholders, `{first_name|there}` defaults, `{{` / `}}` for literal braces.

Pure, no I/O. A template is parsed once (per intake, per chunk) into literal text and placeholders, then rendered
per recipient from that recipient's variables. Any other `{` or `}` is a syntax error, so a typo never goes out
to a million phones as literal text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

PLACEHOLDER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}|]*)(?:\|([^{}]*))?\}|[{}]")


class TemplateSyntaxError(ValueError):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.position = position


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str
    default: str | None  # None: the recipient must give a value


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """Literal text and placeholders in order; `parts` alternates freely between `str` and `Placeholder`."""

    parts: tuple[str | Placeholder, ...]

    @property
    def has_placeholders(self) -> bool:
        return any(isinstance(part, Placeholder) for part in self.parts)

    @property
    def literal_text(self) -> str:
        """The text with every placeholder removed (for a template without placeholders: the message)."""
        return "".join(part for part in self.parts if isinstance(part, str))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(part.name for part in self.parts if isinstance(part, Placeholder)))

    def missing_names(self, variables: Mapping[str, str] | None) -> list[str]:
        """Placeholders without a default that `variables` gives no value for, in order of appearance."""
        given = variables or {}
        return list(
            dict.fromkeys(
                part.name
                for part in self.parts
                if isinstance(part, Placeholder) and part.default is None and part.name not in given
            )
        )

    def render(self, variables: Mapping[str, str] | None) -> str:
        """The message for one recipient; a missing value falls back to the default, else to ''."""
        given = variables or {}
        pieces = []
        for part in self.parts:
            if isinstance(part, str):
                pieces.append(part)
            else:
                value = given.get(part.name)
                pieces.append(value if value is not None else (part.default or ""))
        return "".join(pieces)


def parse_template(text: str) -> MessageTemplate:
    """Split `text` into literals and placeholders; raises TemplateSyntaxError on a stray or malformed brace."""
    parts: list[str | Placeholder] = []
    literal: list[str] = []
    position = 0
    for match in _TOKEN.finditer(text):
        literal.append(text[position : match.start()])
        position = match.end()
        lexeme = match.group(0)
        if lexeme == "{{":
            literal.append("{")
        elif lexeme == "}}":
            literal.append("}")
        elif lexeme in ("{", "}"):
            raise TemplateSyntaxError(
                f"unmatched '{lexeme}' (write '{lexeme}{lexeme}' for a literal brace)", match.start()
            )
        else:
            name = match.group(1).strip()
            if not PLACEHOLDER_NAME.fullmatch(name):
                raise TemplateSyntaxError(
                    f"invalid placeholder name {name!r} (letters, digits and _; write '{{{{' for a literal brace)",
                    match.start(),
                )
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(Placeholder(name, match.group(2)))
    literal.append(text[position:])
    if any(literal):
        parts.append("".join(literal))
    return MessageTemplate(tuple(part for part in parts if part != ""))
