"""The Kubernetes manifests in examples/deploy validate and agree with the code.

Schemas: ``kubernetes-validate`` (PyPI) ships the Kubernetes OpenAPI JSON
schemas for every release and validates offline; strict mode rejects unknown
fields, so a misspelt key fails here rather than in a cluster.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pytest

kubernetes_validate = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

from agent.calls import CallManager  # noqa: E402
from agent.serving.cli import add_arguments  # noqa: E402
from agent.serving.http import make_app  # noqa: E402
from transports.mqtt.settings import parse_mqtt_url  # noqa: E402

DEPLOY = Path(__file__).resolve().parents[2] / "examples" / "deploy"
K8S_VERSION = "1.33.0"


def documents() -> list[dict]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def find(kind: str, name: str) -> dict:
    return next(d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name)


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    docs = documents()
    assert len(docs) >= 12
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_rejects_broken_manifests() -> None:
    broken = copy.deepcopy(find("Deployment", "voxwire-worker"))
    broken["spec"]["replica"] = 3  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    wrong_type = copy.deepcopy(find("Service", "voxwire-worker"))
    wrong_type["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, K8S_VERSION, strict=True)


def test_the_deployment_has_workers_gpu_servers_a_broker_and_scales_on_sessions() -> None:
    for name in ("voxwire-worker", "voxtral-tts", "llm", "mosquitto"):
        find("Deployment", name)
    for name in ("voxtral-tts", "llm"):
        limits = find("Deployment", name)["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == 1
    hpa = find("HorizontalPodAutoscaler", "voxwire-worker")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "voxwire-worker"}
    assert any(m["type"] == "Pods" and m["pods"]["metric"]["name"] == "voxwire_sessions" for m in hpa["metrics"])


def test_the_worker_pod_matches_the_serving_code() -> None:
    pod = find("Deployment", "voxwire-worker")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][0] == "serve"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(container["args"][1:])
    assert pod["terminationGracePeriodSeconds"] > args.drain_deadline, "Kubernetes would kill draining calls"
    settings = parse_mqtt_url(args.mqtt.split("?")[0])
    assert settings.tls and settings.username and settings.password is None  # the password comes from the env
    assert "VOXWIRE_MQTT_PASSWORD" in {e["name"] for e in container["env"]}
    routes = {r.resource.canonical for r in make_app(CallManager(lambda info: []), worker="x").router.routes()}
    assert container["livenessProbe"]["httpGet"]["path"] in routes
    assert container["readinessProbe"]["httpGet"]["path"] in routes
    annotations = find("Deployment", "voxwire-worker")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in routes and int(annotations["prometheus.io/port"]) == args.port
