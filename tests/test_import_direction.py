"""The product's packages import in one direction only, read from the source (ast) so nothing needs importing:

- nothing in `api/`, `worker/` or `shared/` imports `bulksms_tools` (the CLI, stack runner and simulator are tools
  around the product, not part of it);
- `shared/` imports neither `api` nor `worker`, and `api/` does not import `worker` (the API only publishes tasks);
- only `shared/twilio/gateway.py` imports Twilio's REST client (`twilio.rest`), the one way a message is sent;
  checking a signature (`twilio.request_validator`) is allowed anywhere.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPOSITORY_ROOT

PRODUCT_PACKAGES = ("api", "worker", "shared")
TWILIO_GATEWAY = "shared.twilio.gateway"
TWILIO_SENDING_CLIENT = "twilio.rest"


@dataclass(frozen=True)
class Import:
    """One import statement (or one name of `import a, b`): `from a import b` may import module a.b or a name of a."""

    module: str  # the importing module, dotted
    imported: str  # what it imports from, dotted and absolute
    line: int
    names: tuple[str, ...] = ()  # `from imported import names`

    def candidates(self) -> list[str]:
        return [self.imported, *(f"{self.imported}.{name}" for name in self.names if name != "*")]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPOSITORY_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    """`from ..platform import db` in shared.twilio.gateway is shared.platform."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imports_in_source(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import in `source`, absolute: `import a.b`, `from a import b`, relative imports resolved, and
    `importlib.import_module("a.b")` / `__import__("a.b")` with a literal name."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(Import(module, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = resolve_relative(module, is_package, node.level, node.module) if node.level else (node.module or "")
            found.append(Import(module, base, node.lineno, tuple(alias.name for alias in node.names)))
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            argument = node.args[0]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                found.append(Import(module, argument.value, node.lineno))
    return found


def _is_dynamic_import(function: ast.expr) -> bool:
    if isinstance(function, ast.Name):
        return function.id in ("__import__", "import_module")
    return isinstance(function, ast.Attribute) and function.attr == "import_module"


def product_imports() -> list[Import]:
    found: list[Import] = []
    for package in PRODUCT_PACKAGES:
        for path in sorted((REPOSITORY_ROOT / package).rglob("*.py")):
            found.extend(imports_in_source(path.read_text(), module_name(path), path.name == "__init__.py"))
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def import_direction_violations(imports: list[Import]) -> list[str]:
    """One line per import that breaks a rule, naming the module, the line and what it imports."""
    violations = []
    for found in imports:
        for imported in found.candidates():
            reason = broken_rule(found.module, imported)
            if reason:
                violations.append(f"{found.module} (line {found.line}) imports {imported}: {reason}")
                break
    return violations


def broken_rule(module: str, imported: str) -> str | None:
    if within(imported, "bulksms_tools"):
        return "the product never imports the tooling package"
    if within(module, "shared") and (within(imported, "api") or within(imported, "worker")):
        return "shared/ is imported by api/ and worker/, never the other way round"
    if within(module, "api") and within(imported, "worker"):
        return "the API publishes tasks by name and never imports the worker"
    if within(imported, TWILIO_SENDING_CLIENT) and module != TWILIO_GATEWAY:
        return f"only {TWILIO_GATEWAY} sends through Twilio's REST client"
    return None


def test_the_product_imports_in_one_direction_and_sends_only_through_the_gateway() -> None:
    imports = product_imports()
    assert {found.module for found in imports} >= {"api.app", "worker.app", TWILIO_GATEWAY}, "no source read"

    violations = import_direction_violations(imports)

    assert not violations, "imports against the house plan:\n" + "\n".join(violations)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("shared.platform.db", "import bulksms_tools.local_services", ["imports bulksms_tools.local_services"]),
        ("worker.tasks", "from bulksms_tools import cli", ["imports bulksms_tools"]),
        ("shared.broadcasts.intake", "from worker.app import celery_app", ["imports worker.app"]),
        ("shared.broadcasts.intake", "from api import schemas", ["imports api"]),
        ("api.views", "import worker.tasks", ["imports worker.tasks"]),
        ("api.views", 'importlib.import_module("worker.tasks")', ["imports worker.tasks"]),
        ("shared.sending.chunks", "from twilio.rest import Client", ["imports twilio.rest"]),
        ("shared.sending.chunks", "from twilio import rest", ["imports twilio.rest"]),
        ("shared.twilio.error_codes", "from .. import worker_things", []),  # shared.worker_things, not worker
        ("shared.twilio.error_codes", "from ...worker import tasks", ["imports worker"]),
        ("worker.tasks", "from shared.sending.chunks import send_chunk", []),
        ("api.webhooks", "from twilio.request_validator import RequestValidator", []),
        (TWILIO_GATEWAY, "from twilio.rest import Client", []),
        ("shared.platform.settings", "import apispec", []),  # a name that only starts like `api`
    ],
)
def test_each_rule_names_the_module_and_the_import(module: str, source: str, expected: list[str]) -> None:
    violations = import_direction_violations(imports_in_source(source, module))

    assert len(violations) == (1 if expected else 0), violations
    for fragment in expected:
        assert violations[0].startswith(f"{module} (line 1) {fragment}")
