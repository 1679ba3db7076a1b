"""prometheus.yml, checked without Docker: it scrapes /metrics of the compose services that serve it, on the ports
they listen on, and the compose file mounts it into the `prometheus` service (profile `metrics`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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
    assert "--config.file=/etc/prometheus/prometheus.yml" in service["command"]
    assert set(service["depends_on"]) == {"api", "webhook"}
