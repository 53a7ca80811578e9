"""deploy/kubernetes/ holds together: names, ports, selectors and configs cross-checked.

No cluster runs here, so the manifests are parsed and checked against each other:
every workload's selector matches its pods, every Service selects a workload and
targets a port it exposes, every address a container is given names a Service and
a port that exists, every ConfigMap a pod mounts exists and holds the file its
command reads. The configs the ConfigMaps embed load with the real config reader,
their ${VAR}s set from the container's environment (Secrets as placeholders), and
are deploy/replicated's files plus security (so one setup is tested by up.sh, the
other is the same topology): every server passes the check the server runs before
it listens beyond loopback, every file a config names is in a mounted volume (and
is one of the items a Secret volume projects), every link is TLS with a token, and
deploy/kubernetes/README.md says how to create every Secret the manifests use.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cas.config.stores import GrpcSpec, typed_specs
from server.auth.exposure import check_exposure
from server.config import ServerConfig, load_config
from tests.conftest import REPO_ROOT
from worker.config import WorkerConfig, load_worker_config

MANIFESTS = REPO_ROOT / "deploy" / "kubernetes"
REPLICATED = REPO_ROOT / "deploy" / "replicated"
WORKLOADS = ("Deployment", "StatefulSet")
ADDRESS = re.compile(r"^(?:[a-z+]+://)?(?:[^@/]*@)?([a-z0-9.-]+):(\d+)(?:/.*)?$")


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


def placeholder(secret: str, key: str) -> str:
    """What a Secret's value stands for in these tests (no secret is in the repository)."""
    return f"example-{secret}-{key}".replace(".", "-")


def env_of(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container's environment as the kubelet would set it: metadata.name -> pod_name,
    a Secret's key -> its placeholder, ``$(NAME)`` -> an earlier variable's value."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = placeholder(ref["name"], ref["key"])
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


def load_embedded(workload: dict[str, Any], container: dict[str, Any], tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> ServerConfig | WorkerConfig | None:
    """The container's config as its program reads it, or None for a container without one."""
    found = mounted_config(workload, container)
    if found is None:
        return None
    config_map, key = found
    path = tmp_path / key
    path.write_text(config_map["data"][key])
    for name, value in env_of(container, f"{workload['metadata']['name']}-0").items():
        monkeypatch.setenv(name, value)
    if container["command"][0] == "reapi-worker":
        return load_worker_config(path)
    return load_config(path)


SERVERS = [param for param in CONTAINERS if param.values[1].get("command", [""])[0] == "reapi-server"]  # type: ignore[union-attr]
LINK_KEYS: dict[str, Any] = {"tls_ca": None, "tls_cert": None, "tls_key": None, "token_file": None}


def without_security(spec: Any) -> Any:
    """A store spec as the loopback setup writes it: plain grpc://, no TLS or token files."""
    if isinstance(spec, GrpcSpec):
        return dataclasses.replace(spec, address=spec.address.replace("grpcs://", "grpc://", 1), **LINK_KEYS)
    return spec


@pytest.mark.parametrize(("workload", "container"), CONTAINERS)
def test_embedded_configs_load_with_the_containers_environment(
    workload: dict[str, Any], container: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_embedded(workload, container, tmp_path, monkeypatch)
    if config is None:
        return
    replicated_env = {"REAPI_ENDPOINT": "grpc://reapi-frontend:8980"}  # the loopback setup's plain link
    for name, value in replicated_env.items():
        monkeypatch.setenv(name, value)
    if isinstance(config, WorkerConfig):
        assert config.server == "grpcs://reapi-frontend:8980"
        same_worker = load_worker_config(REPLICATED / "worker.toml")
        assert dataclasses.replace(config, server=same_worker.server, tls_ca=None, token_file=None) == same_worker
        return
    listen_port = int(config.listen.rsplit(":", 1)[1])
    assert listen_port in {p["containerPort"] for p in container["ports"]}
    component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
    same = load_config(REPLICATED / f"{component}.toml")
    assert {name: without_security(spec) for name, spec in typed_specs(config.stores).items()} == typed_specs(same.stores)
    assert (config.listen, config.instances, config.raw["execution"]) == (same.listen, same.instances, same.raw["execution"])


@pytest.mark.parametrize(("workload", "container"), SERVERS)
def test_every_server_passes_the_exposure_check_without_allow_insecure(
    workload: dict[str, Any], container: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_embedded(workload, container, tmp_path, monkeypatch)
    assert isinstance(config, ServerConfig)
    assert not config.allow_insecure
    assert config.tls.enabled and config.auth.enabled
    check_exposure(config.listen, config.tls.enabled, config.auth.enabled, config.allow_insecure)  # as start_server does


def paths_in(value: Any) -> Iterator[Path]:
    """Every Path in a loaded config (dataclasses, mappings and sequences walked)."""
    if isinstance(value, Path):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            yield from paths_in(getattr(value, item.name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from paths_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from paths_in(item)


def file_paths(config: ServerConfig | WorkerConfig) -> list[Path]:
    if isinstance(config, WorkerConfig):
        return list(paths_in(config))
    return [*paths_in(config.tls), *paths_in(config.auth), *paths_in(typed_specs(config.stores))]


@pytest.mark.parametrize(("workload", "container"), CONTAINERS)
def test_every_file_a_config_names_is_in_a_mounted_volume(
    workload: dict[str, Any], container: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_embedded(workload, container, tmp_path, monkeypatch)
    if config is None:
        return
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
    paths = file_paths(config)
    assert paths
    for path in paths:
        mounts = [m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])]
        assert mounts, f"{workload['metadata']['name']}: {path} is in no mounted volume"
        mount = max(mounts, key=lambda m: len(m["mountPath"]))
        assert mount["name"] in volumes or mount["name"] in claims, mount
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret is not None:
            projected = {item["path"] for item in secret["items"]}
            assert str(path.relative_to(mount["mountPath"])) in projected, f"{path}: not an item of {secret['secretName']}"


@pytest.mark.parametrize(("workload", "container"), SERVERS)
def test_every_link_to_a_storage_node_is_tls_with_a_token(
    workload: dict[str, Any], container: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_embedded(workload, container, tmp_path, monkeypatch)
    assert isinstance(config, ServerConfig)
    links = [spec for spec in typed_specs(config.stores).values() if isinstance(spec, GrpcSpec)]
    for link in links:
        assert link.address.startswith("grpcs://") and link.tls_ca is not None and link.token_file is not None, link
    component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
    if component == "storage":  # one identity (the frontends' token); nobody anonymous, no other way in
        assert config.auth.tokens is not None and not config.auth.certificates and config.auth.jwt is None
        assert config.auth.anonymous is None  # so anonymous callers may nothing
    else:
        assert len(links) == 2


def test_workers_reach_the_frontends_over_tls_with_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workers = [(w, c) for w, c in containers() if c.get("command", [""])[0] == "reapi-worker"]
    assert len(workers) == 2
    for workload, container in workers:
        config = load_embedded(workload, container, tmp_path, monkeypatch)
        assert isinstance(config, WorkerConfig)
        assert config.server.startswith("grpcs://") and config.tls_ca is not None and config.token_file is not None


def secrets_used() -> set[tuple[str, str]]:
    """(Secret, key) of every Secret volume item and every secretKeyRef in the manifests."""
    used = set()
    for workload, container in containers():
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in volume:
                used |= {(volume["secret"]["secretName"], item["key"]) for item in volume["secret"]["items"]}
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                used.add((ref["name"], ref["key"]))
    return used


def test_no_secret_is_in_the_repository_and_the_readme_makes_every_one() -> None:
    assert not of_kind("Secret")
    readme = (MANIFESTS / "README.md").read_text()
    used = secrets_used()
    assert {name for name, _ in used} >= {"reapi-frontend-tls", "reapi-frontend-auth", "reapi-storage-client",
                                          "reapi-storage-tls", "reapi-storage-auth", "reapi-worker", "reapi-redis"}
    lines = re.sub(r"\\\n\s*", " ", readme).splitlines()  # backslash-continued commands as one line
    made = set()
    for line in lines:
        command = re.search(r"kubectl create secret generic (\S+)(.*)", line)
        if command is not None:
            made |= {(command.group(1), key) for key in re.findall(r"--from-(?:file|literal)=([^=\s]+)=", command.group(2))}
    assert used <= made, f"README.md makes no {sorted(used - made)}"
