"""prometheus.yml, checked without Docker: it scrapes /metrics of the compose services that serve it, on the ports
they listen on, with the metrics token, and the compose file mounts it into the `prometheus` service (profile
`metrics`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shared.platform.settings import settings_documentation

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
CONFIG: dict[str, Any] = yaml.safe_load((REPOSITORY_ROOT / "prometheus.yml").read_text())
SERVICES: dict[str, Any] = yaml.safe_load((REPOSITORY_ROOT / "docker-compose.yml").read_text())["services"]


def listening_port(service: dict[str, Any]) -> int:
    """The port a gunicorn service binds inside its container (`--bind=0.0.0.0:PORT`)."""
    for word in service["command"]:
        if str(word).startswith("--bind="):
            return int(str(word).rsplit(":", 1)[1])
    raise AssertionError(f"no --bind in {service['command']}")


def scrape_targets() -> dict[str, tuple[str, str, int]]:
    targets = {}
    for job in CONFIG["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets[job["job_name"]] = (job.get("metrics_path", "/metrics"), host, int(port))
    return targets


def test_the_api_and_the_webhook_are_scraped_on_their_ports_every_15_seconds() -> None:
    assert CONFIG["global"]["scrape_interval"] == "15s"
    targets = scrape_targets()
    assert {host for _, host, _ in targets.values()} == {"api", "webhook"}
    for path, host, port in targets.values():
        assert path == "/metrics"
        assert host in SERVICES, f"{host} is not a compose service"
        assert port == listening_port(SERVICES[host]), f"{host} listens on {listening_port(SERVICES[host])}"


def test_the_prometheus_service_runs_this_config_under_the_metrics_profile() -> None:
    service = SERVICES["prometheus"]
    assert service["image"].startswith("prom/prometheus")
    assert service["profiles"] == ["metrics"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in service["volumes"]
    script = " ".join(service["command"])
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    assert "exec /bin/prometheus --config.file=/etc/prometheus/prometheus.yml" in script
    assert set(service["depends_on"]) == {"api", "webhook"}


def test_every_scrape_sends_the_metrics_token_that_compose_writes_from_the_setting() -> None:
    """/metrics needs `Authorization: Bearer <METRICS_TOKEN>` (always on the internet-facing webhook service):
    every job reads the token from the file the prometheus service writes from METRICS_TOKEN at start."""
    service = SERVICES["prometheus"]
    script = " ".join(service["command"])
    assert service["environment"]["METRICS_TOKEN"] == "${METRICS_TOKEN:-}"
    files = set()
    for job in CONFIG["scrape_configs"]:
        authorization = job["authorization"]
        assert authorization["type"] == "Bearer", job["job_name"]
        files.add(authorization["credentials_file"])
    (token_file,) = files
    assert f"printf '%s' \"$$METRICS_TOKEN\" > {token_file}" in script
    assert token_file.startswith("/prometheus/"), "the data volume: writable by the prometheus user"
    assert "METRICS_TOKEN" in {variable for variable, _, _ in settings_documentation()}
