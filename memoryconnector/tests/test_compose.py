"""docker-compose: one `.env` feeds web, worker and beat, whole and alike (rendered with the
real `docker-compose config`, which CI installs)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("web", "worker", "beat")

DOCKER_COMPOSE = shutil.which("docker-compose")

pytestmark = pytest.mark.skipif(
    DOCKER_COMPOSE is None,
    reason="docker-compose is not installed (.ci/run installs it)",
)

# Settings an operator changes in .env; each must reach every app container.
CHANGED = {
    "DJANGO_SECRET_KEY": "compose-test-secret",
    "JWT_SIGNING_KEY": "compose-test-jwt-key",
    "ALLOW_REGISTRATION": "false",
    "SMTP_HOST": "smtp.example.com",
    "SLACK_BOT_TOKEN": "xoxb-compose-test",
    "USER_DAILY_MEMORY_LIMIT": "7",
    "AUTH_THROTTLE_RATE": "3/min",
    "AI_DAILY_BUDGET_CENTS": "900",
    "AI_PROVIDER": "openai",
    "OPENAI_API_KEY": "sk-compose-test",
    "NUM_PROXIES": "1",
}


def env_example_names() -> list[str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]


def render(tmp_path: Path) -> dict:
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={CHANGED[name]}" if name in CHANGED else line)
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    # Only the .env speaks: nothing from this process's environment leaks into the render.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = subprocess.run(  # noqa: S603 - a fixed command of ours
        [DOCKER_COMPOSE, "config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return yaml.safe_load(result.stdout)


def test_it_gives_web_worker_and_beat_the_same_whole_configuration(tmp_path):
    services = render(tmp_path)["services"]

    environments = {name: services[name]["environment"] for name in APP_SERVICES}
    assert environments["web"] == environments["worker"] == environments["beat"]
    environment = environments["web"]
    missing = [name for name in env_example_names() if name not in environment]
    assert missing == []
    for name, value in CHANGED.items():
        assert environment[name] == value, name
    # The addresses inside the compose network win over .env's.
    assert environment["DATABASE_URL"].startswith("postgres://memoryconnector:")
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    assert environment["DJANGO_SETTINGS_MODULE"] == "memoryconnector.settings.production"
