"""docker-compose.yml, checked without Docker: every service runs a command that exists in this package, waits
for what it needs, and is configured only from variables that `.env.example` documents."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values
from gunicorn.glogging import Logger

from bulksms_tools.cli import cli

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (REPOSITORY_ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
PACKAGE_SERVICES = (
    "migrate",
    "api",
    "worker",
    "status-worker",
    "callback-worker",
    "webhook",
    "beat",
    "simulator",
    "test-simulator",
)  # the ones built from our Dockerfile
# `${NAME}`, `${NAME:-default}`, `${NAME:?error}`, not `$${NAME}` (a literal `$` for the container's shell).
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
CONTAINER_VARIABLE = re.compile(r"\$\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def command_words(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else [str(word) for word in command]


def module_assigns(module_name: str, attribute: str) -> bool:
    """Whether `module_name` exists and binds `attribute` at top level (parsed, not imported: no settings)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return False
    tree = ast.parse(Path(spec.origin).read_text())
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(target, ast.Name) and target.id == attribute for target in targets):
            return True
        if isinstance(node, ast.ImportFrom) and any((alias.asname or alias.name) == attribute for alias in node.names):
            return True
    return False


def test_the_expected_services_exist() -> None:
    expected = {
        "postgres",
        "redis",
        "migrate",
        "api",
        "worker",
        "status-worker",
        "callback-worker",
        "webhook",
        "beat",
        "flower",
        "simulator",
        "test-simulator",
    }
    assert expected <= set(SERVICES)


def test_databases_use_the_pinned_images_with_healthchecks_and_volumes() -> None:
    assert SERVICES["postgres"]["image"] == "postgres:16"
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert SERVICES["redis"]["image"] == "redis:7"
    assert "--appendonly" in command_words(SERVICES["redis"])
    assert SERVICES["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    for name in ("postgres", "redis"):
        for volume in SERVICES[name]["volumes"]:
            assert volume.split(":")[0] in COMPOSE["volumes"], f"{name}: volume {volume} is not declared"


@pytest.mark.parametrize("name", PACKAGE_SERVICES)
def test_package_services_build_our_image_and_read_dotenv(name: str) -> None:
    service = SERVICES[name]
    assert service["build"] == "."
    assert (REPOSITORY_ROOT / "Dockerfile").is_file()
    assert service["env_file"] == ".env"


@pytest.mark.parametrize("name", PACKAGE_SERVICES)
def test_every_package_command_exists(name: str) -> None:
    words = command_words(SERVICES[name])
    program = words[0]
    if program == "bulksms":
        assert words[1] in cli.commands, f"{name}: `bulksms {words[1]}` is not a bulksms command"
    elif program == "celery":
        assert words[1:3] == ["-A", "worker.app"], words
        assert words[3] in ("worker", "beat")
        assert module_assigns("worker.app", "celery_app"), "worker.app has no module-level celery_app"
    elif program == "gunicorn":
        target = next(word for word in words[1:] if not word.startswith("-"))
        module_name, attribute = target.split(":")
        assert module_assigns(module_name, attribute), f"{target} does not exist"
    else:
        pytest.fail(f"{name}: unexpected program {program}")


def test_every_queue_has_a_worker_consuming_it() -> None:
    from shared.platform.task_queue import ALL_QUEUES, CALLBACK_QUEUE, MAINTENANCE_QUEUE, SEND_QUEUE, STATUS_QUEUE

    def queues(service: str) -> set[str]:
        words = command_words(SERVICES[service])
        return set(words[words.index("--queues") + 1].split(","))

    assert queues("worker") == {SEND_QUEUE, MAINTENANCE_QUEUE}
    assert queues("status-worker") == {STATUS_QUEUE}
    assert queues("callback-worker") == {CALLBACK_QUEUE}  # a slow client server never holds a sending process
    assert queues("worker") | queues("status-worker") | queues("callback-worker") == set(ALL_QUEUES)


def test_flower_is_protected_persistent_and_reads_the_broker_from_redis_url() -> None:
    flower = SERVICES["flower"]
    command = " ".join(command_words(flower))
    assert "flower" in command
    assert '--broker="$$REDIS_URL"' in command
    assert flower["environment"]["REDIS_URL"] == SERVICES["api"]["environment"]["REDIS_URL"]
    assert "--basic-auth" in command and "FLOWER_BASIC_AUTH" in command
    assert "--persistent=True" in command and "--db=/data/flower.db" in command
    assert any(volume.endswith(":/data") for volume in flower["volumes"])
    assert "5555:5555" in flower["ports"]


def test_the_api_publishes_its_port_and_checks_readiness() -> None:
    api = SERVICES["api"]
    assert any(str(port).endswith(":8000") for port in api["ports"])
    assert "--bind=0.0.0.0:8000" in command_words(api)
    assert "/readyz" in " ".join(api["healthcheck"]["test"])


def test_the_simulator_only_runs_under_its_profile() -> None:
    assert SERVICES["simulator"]["profiles"] == ["simulator"]
    assert SERVICES["prometheus"]["profiles"] == ["metrics"]
    optional = ("simulator", "prometheus")
    assert all("profiles" not in service for name, service in SERVICES.items() if name not in optional)


def test_depends_on_conditions_can_be_met() -> None:
    checked = 0
    for name, service in SERVICES.items():
        for dependency, requirement in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
            condition = requirement["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{name} waits for {dependency}, which has no healthcheck"
            elif condition == "service_completed_successfully":
                assert SERVICES[dependency].get("restart") == "no", f"{dependency} is one-shot, must not restart"
            else:
                pytest.fail(f"{name}: unexpected condition {condition}")
            checked += 1
    assert checked >= 8
    for name in ("api", "worker", "beat"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_env_example_documents_every_variable_the_compose_file_uses() -> None:
    documented = set(dotenv_values(REPOSITORY_ROOT / ".env.example"))
    referenced = set(INTERPOLATION.findall(COMPOSE_TEXT))
    assert referenced, "expected ${...} references (POSTGRES_PASSWORD, FLOWER_BASIC_AUTH, PORT)"
    assert referenced <= documented, f"not in .env.example: {sorted(referenced - documented)}"


def test_container_shell_variables_are_defined_for_that_container() -> None:
    for name, service in SERVICES.items():
        healthcheck = service.get("healthcheck", {}).get("test", [])
        text = " ".join(command_words(service) if "command" in service else []) + " " + " ".join(healthcheck)
        for variable in CONTAINER_VARIABLE.findall(text):
            defined = set(service.get("environment") or {}) | {"HOSTNAME"}
            assert variable in defined, f"{name} uses $${variable} but does not define it"


def test_every_gunicorn_service_masks_its_access_log_like_the_application_logs() -> None:
    gunicorn_services = [name for name in PACKAGE_SERVICES if command_words(SERVICES[name])[0] == "gunicorn"]
    assert set(gunicorn_services) == {"api", "webhook"}
    for name in gunicorn_services:
        words = command_words(SERVICES[name])
        assert "--logger-class=api.access_log.MaskedAccessLogger" in words, name
    from api.access_log import MaskedAccessLogger

    assert issubclass(MaskedAccessLogger, Logger)


def test_the_test_account_simulator_is_a_service_of_every_deployment_and_stays_internal() -> None:
    """Test keys must work on a production deployment: the test account's simulator runs without a profile, as
    the test account (its own SID and token from .env), and is reached by the workers only (no published port)."""
    service = SERVICES["test-simulator"]
    assert "profiles" not in service and "ports" not in service
    words = command_words(service)
    assert words[:3] == ["bulksms", "simulator", "--test-account"]
    port = words[words.index("--port") + 1]
    # .env.example tells operators where the workers find it.
    assert f"TEST_TWILIO_BASE_URL=http://test-simulator:{port}" in (REPOSITORY_ROOT / ".env.example").read_text()
