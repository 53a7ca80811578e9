"""deploy/kubernetes/ holds together: names, ports, selectors and configs cross-checked.

No cluster runs here, so the manifests are parsed and checked against each other:
every workload's selector matches its pods, every Service selects a workload and
targets a port it exposes, every address a container is given names a Service and
a port that exists, every ConfigMap a pod mounts exists and holds the file its
command reads. The configs the ConfigMaps embed are deploy/replicated's files
(so one setup is tested by up.sh, the other is the same), and each loads with the
real config reader, its ${VAR}s set from the container's environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.config import load_config
from tests.conftest import REPO_ROOT
from worker.config import load_worker_config

MANIFESTS = REPO_ROOT / "deploy" / "kubernetes"
REPLICATED = REPO_ROOT / "deploy" / "replicated"
WORKLOADS = ("Deployment", "StatefulSet")
ADDRESS = re.compile(r"^(?:[a-z+]+://)?([a-z0-9.-]+):(\d+)(?:/.*)?$")


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


DOCS = documents()


def of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [doc for doc in DOCS if doc["kind"] in kinds]


def named(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in of_kind(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload in of_kind(*WORKLOADS):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            yield workload, container


CONTAINERS = [pytest.param(w, c, id=f"{w['metadata']['name']}/{c['name']}") for w, c in containers()]


def env_of(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container's environment as the kubelet would set it (metadata.name -> pod_name)."""
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", item
            env[item["name"]] = pod_name
    return env


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_the_parts_are_there() -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in DOCS}
    assert {("Deployment", "reapi-frontend"), ("StatefulSet", "reapi-storage"), ("StatefulSet", "reapi-redis"),
            ("Service", "reapi-frontend"), ("Service", "reapi-storage"), ("Service", "reapi-redis")} <= kinds
    archs = {doc["spec"]["template"]["spec"].get("nodeSelector", {}).get("kubernetes.io/arch")
             for doc in of_kind("Deployment") if doc["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"}
    assert archs == {"amd64", "arm64"}


@pytest.mark.parametrize("workload", of_kind(*WORKLOADS), ids=lambda d: d["metadata"]["name"])
def test_selectors_match_pods_and_statefulsets_their_headless_service(workload: dict[str, Any]) -> None:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert selects(workload["spec"]["selector"]["matchLabels"], labels)
    if workload["kind"] == "StatefulSet":
        service = named("Service", workload["spec"]["serviceName"])
        assert selects(service["spec"]["selector"], labels)


@pytest.mark.parametrize("service", of_kind("Service"), ids=lambda d: d["metadata"]["name"])
def test_services_select_a_workload_and_target_its_ports(service: dict[str, Any]) -> None:
    chosen = [w for w in of_kind(*WORKLOADS) if selects(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
    assert len(chosen) == 1, f"{service['metadata']['name']} selects {len(chosen)} workloads"
    ports = {(p["name"], p["containerPort"]) for c in chosen[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    for port in service["spec"]["ports"]:
        assert any(port["targetPort"] in (name, number) for name, number in ports), port


def service_port(host: str, port: int) -> bool:
    """Whether ``host:port`` reaches a Service (``svc`` or ``pod.svc`` of a StatefulSet)."""
    parts = host.split(".")
    service = parts[-1] if len(parts) > 1 else parts[0]
    found = [s for s in of_kind("Service") if s["metadata"]["name"] == service]
    if not found or port not in {p["port"] for p in found[0]["spec"]["ports"]}:
        return False
    if len(parts) > 1:  # a StatefulSet pod: NAME-ORDINAL.SERVICE
        pod, ordinal = parts[0].rsplit("-", 1)
        sets = [s for s in of_kind("StatefulSet") if s["metadata"]["name"] == pod and s["spec"]["serviceName"] == service]
        return bool(sets) and int(ordinal) < sets[0]["spec"]["replicas"]
    return True


@pytest.mark.parametrize(("workload", "container"), CONTAINERS)
def test_every_address_a_container_is_given_reaches_a_service(workload: dict[str, Any], container: dict[str, Any]) -> None:
    for name, value in env_of(container, "pod").items():
        match = ADDRESS.match(value)
        if match and not value.startswith("0.0.0.0"):
            assert service_port(match.group(1), int(match.group(2))), f"{name}={value} reaches no Service"


def mounted_config(workload: dict[str, Any], container: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The ConfigMap the container's --config file comes from, and the file's key in it."""
    command = container.get("command", [])
    if "--config" not in command:
        return None
    path = Path(command[command.index("--config") + 1])
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    for mount in container["volumeMounts"]:
        if Path(mount["mountPath"]) == path.parent:
            return named("ConfigMap", volumes[mount["name"]]["configMap"]["name"]), path.name
    raise AssertionError(f"{workload['metadata']['name']}: nothing mounted at {path.parent}")


@pytest.mark.parametrize(("workload", "container"), CONTAINERS)
def test_embedded_configs_load_with_the_containers_environment(
    workload: dict[str, Any], container: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = mounted_config(workload, container)
    if found is None:
        return
    config_map, key = found
    text = config_map["data"][key]
    path = tmp_path / key
    path.write_text(text)
    for name, value in env_of(container, f"{workload['metadata']['name']}-0").items():
        monkeypatch.setenv(name, value)
    if container["command"][0] == "reapi-worker":
        assert text == (REPLICATED / "worker.toml").read_text()
        worker = load_worker_config(path)
        assert worker.server == "grpc://reapi-frontend:8980"
        return
    config = load_config(path)
    listen_port = int(config.listen.rsplit(":", 1)[1])
    assert listen_port in {p["containerPort"] for p in container["ports"]}
    component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
    assert text == (REPLICATED / f"{component}.toml").read_text()
