"""The compose stack's files, validated as far as a machine without a Docker engine can."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from driftline.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_stack(compose: dict) -> None:
    services = compose["services"]
    assert set(services) >= {"kafka", "topics", "worker", "producer", "prometheus"}
    assert services["kafka"]["image"].startswith("apache/kafka:4.1.1")
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["worker"]["build"] == "."
    assert "--bootstrap" in services["worker"]["command"]
    assert services["producer"]["command"][0] == "produce-synthetic"


def test_files_the_stack_mounts_exist_and_are_valid(compose: dict) -> None:
    for vol in compose["services"]["prometheus"]["volumes"]:
        assert (ROOT / vol.split(":")[0]).is_file(), vol
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and not line.startswith("COPY --from"):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), line
    spec = load_spec(ROOT / "deploy" / "pipeline.toml")
    assert spec.input.topic == "driftline.demo.events"
    topics_cmd = compose["services"]["topics"]["command"][0]
    for t in (
        spec.input.topic,
        spec.output.features_topic,
        spec.output.alerts_topic,
        spec.output.predictions_topic,
        spec.output.dlq_topic,
    ):
        assert t in topics_cmd


def test_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: apt-get install -y prometheus (.ci/run does this)")
    r = subprocess.run(
        [promtool, "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
