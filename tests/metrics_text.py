"""A small parser of the Prometheus text exposition format, strict enough to catch what a scraper would reject."""

from __future__ import annotations

import math
import re

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
SUFFIXES = ("_bucket", "_sum", "_count")


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value}; fails on any line that is not a HELP, a TYPE or a valid sample, and on
    any sample whose metric lacks a HELP and a TYPE (declared before it)."""
    helps: set[str] = set()
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps.add(line.split(" ", 3)[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample: {line!r}"
        name, _, label_text, value = match.groups()
        labels = LABEL.findall(label_text or "")
        if label_text:
            assert ",".join(f'{k}="{v}"' for k, v in labels) == label_text, f"bad labels: {line!r}"
        number = float(value)  # "+Inf", "NaN" and integers parse too
        assert not math.isnan(number) or value == "NaN"
        family = name
        if name not in types:
            family = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s) and name[: -len(s)] in types), name)
        assert family in types and family in helps, f"{name} has no HELP/TYPE"
        key = (name, frozenset(labels))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = number
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    """The sum of every series of `name` (all label sets)."""
    return sum(number for (sample, _), number in samples.items() if sample == name)
