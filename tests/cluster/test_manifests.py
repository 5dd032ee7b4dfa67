"""The cluster recipes under cluster/: every manifest parses and carries what its launcher needs.

Ray cluster launcher configs are checked against Ray's own schema (``ray-schema.json``, shipped
in the ray wheel) and for the fields ``ray up`` relies on; KubeRay ``RayCluster``/``RayJob``
specs for images, resource requests, the shared volume and a GPU group; Ray's token
authentication everywhere, the token coming from outside the repository and the image; the
``esper sweep`` commands in the RayJob and in cluster/README.md are composed, so a typo in an
override fails here; the Dockerfile installs torch and the project; every image names the same
Ray version, inside pyproject's range. Files are found by glob, so a new manifest is tested
without editing this file.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

from esper.conf import compose
from esper.config import EsperConfig

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
SHARED = "/mnt/shared"
"""Where every node and pod mounts the shared storage (the ``ray_cluster`` preset's root)."""
GPU = "nvidia.com/gpu"
TOKEN_FILE = "~/.ray/auth_token"
"""Ray's default token file (``ray get-auth-token --generate`` writes it)."""

YAMLS = sorted([*CLUSTER.rglob("*.yaml"), *CLUSTER.rglob("*.yml")])
DOCKERFILE = CLUSTER / "Dockerfile"
README = CLUSTER / "README.md"


def _documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def _name(path: Path) -> str:
    return str(path.relative_to(CLUSTER))


def _is_launcher(doc: Any) -> bool:
    return isinstance(doc, dict) and "provider" in doc and "available_node_types" in doc


def _is_k8s(doc: Any) -> bool:
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


LAUNCHERS = [p for p in YAMLS if any(_is_launcher(d) for d in _documents(p))]
K8S = [(p, d) for p in YAMLS for d in _documents(p) if _is_k8s(d)]


def _objects(kind: str) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in K8S if d["kind"] == kind]


def _ray_cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """``(label, spec)`` of every RayCluster and of every RayJob's ``rayClusterSpec``."""
    specs = [(f"{_name(p)}:{d['metadata']['name']}", d["spec"]) for p, d in _objects("RayCluster")]
    specs += [
        (f"{_name(p)}:{d['metadata']['name']}", d["spec"]["rayClusterSpec"])
        for p, d in _objects("RayJob")
    ]
    return specs


CLUSTER_SPECS = _ray_cluster_specs()


def _ids(paths: list[Path]) -> list[str]:
    return [_name(p) for p in paths]


def _overrides(command: str) -> list[str]:
    """The Hydra overrides of an ``esper sweep``/``esper run`` command line: the words after
    the subcommand, without flags (``--address auto``, ``--resume DIR``, ``--flag=value``)."""
    words = shlex.split(command)
    assert words[:1] == ["esper"] and words[1:2] in (["sweep"], ["run"]), command
    rest, overrides = iter(words[2:]), []
    for word in rest:
        if word.startswith("--"):
            if "=" not in word:
                following = next(rest, None)
                if following is not None and "=" in following:
                    overrides.append(following)  # a switch: the next word is an override
        else:
            overrides.append(word)
    return overrides


@cache
def _composed(overrides: tuple[str, ...]) -> EsperConfig:
    """:func:`compose`, once per distinct override list (each call costs a Hydra compose)."""
    return compose(list(overrides))


def _ray_version() -> str:
    match = re.search(r"^ARG RAY_VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "cluster/Dockerfile must declare ARG RAY_VERSION=<x.y.z>"
    return match.group(1)


def _images(node: Any) -> Iterator[str]:
    """Every container image named anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("image", "head_image", "worker_image") and isinstance(value, str):
                yield value
            else:
                yield from _images(value)
    elif isinstance(node, list):
        for item in node:
            yield from _images(item)


def _image_is_gpu(image: str) -> bool:
    return image.endswith("-gpu")


# --- every YAML file ------------------------------------------------------------------------


def test_the_cluster_folder_has_the_recipes() -> None:
    assert DOCKERFILE.is_file() and README.is_file()
    assert {"aws.yaml", "gcp.yaml"} <= {p.name for p in LAUNCHERS}
    assert _objects("RayCluster") and _objects("RayJob")


@pytest.mark.parametrize("path", YAMLS, ids=_ids(YAMLS))
def test_every_yaml_is_a_launcher_config_or_kubernetes_objects(path: Path) -> None:
    docs = _documents(path)
    assert docs, f"{_name(path)} is empty"
    for doc in docs:
        assert _is_launcher(doc) or _is_k8s(doc), (
            f"{_name(path)}: a document that is neither a Ray cluster launcher config "
            "(provider, available_node_types) nor a Kubernetes object (apiVersion, kind)"
        )


# --- Ray cluster launcher configs -----------------------------------------------------------


@pytest.fixture(scope="module")
def ray_schema() -> dict[str, Any]:
    spec = importlib.util.find_spec("ray")  # locates the package without importing Ray
    assert spec is not None and spec.submodule_search_locations
    schema = Path(spec.submodule_search_locations[0]) / "autoscaler" / "ray-schema.json"
    return dict(json.loads(schema.read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", LAUNCHERS, ids=_ids(LAUNCHERS))
def test_launcher_config_matches_rays_schema(path: Path, ray_schema: dict[str, Any]) -> None:
    (config,) = _documents(path)
    jsonschema.validate(config, ray_schema)


@pytest.mark.parametrize("path", LAUNCHERS, ids=_ids(LAUNCHERS))
def test_launcher_config_has_what_ray_up_needs(path: Path) -> None:
    (config,) = _documents(path)
    assert config["cluster_name"] and config["provider"]["type"]
    types = config["available_node_types"]
    assert config["head_node_type"] in types, "head_node_type must name an available node type"
    min_total = 0
    for name, node in types.items():
        assert "resources" in node and node["node_config"], f"node type {name}"
        low, high = node.get("min_workers", 0), node.get("max_workers", config["max_workers"])
        assert 0 <= low <= high, f"node type {name}: min_workers {low} > max_workers {high}"
        if name != config["head_node_type"]:
            min_total += low
            assert high > 0, f"worker type {name} can never start (max_workers 0)"
    assert config["max_workers"] >= min_total
    head = " ; ".join(config["head_start_ray_commands"])
    worker = " ; ".join(config["worker_start_ray_commands"])
    assert "ray start --head" in head
    assert "ray start" in worker and "--address=$RAY_HEAD_IP:6379" in worker


@pytest.mark.parametrize("path", LAUNCHERS, ids=_ids(LAUNCHERS))
def test_launcher_runs_the_image_with_shared_storage_and_esper(path: Path) -> None:
    (config,) = _documents(path)
    docker = config["docker"]
    assert docker.get("image") or (docker.get("head_image") and docker.get("worker_image"))
    assert any(f"-v {SHARED}:{SHARED}" in option for option in docker.get("run_options", []))
    for remote, local in config.get("file_mounts", {}).items():
        if remote == TOKEN_FILE:
            continue  # the launching user's token (test_launcher_nodes_use_token_auth)
        assert (ROOT / local).exists(), f"file_mounts {remote}: {local} is not in the repository"
    setup = " ; ".join(config["setup_commands"])
    assert "pip install" in setup and "esper --help" in setup
    for name, node in config["available_node_types"].items():
        # A node type's own initialization_commands replace the global ones.
        init = node.get("initialization_commands", config["initialization_commands"])
        mounts = [c for c in init if re.search(rf"\bmount -t \S+ .* {SHARED}\b", c)]
        assert mounts, f"node type {name} mounts no shared storage at {SHARED}"
        if name == config["head_node_type"]:
            image = docker.get("head_image") or docker["image"]
        else:
            image = (
                node.get("docker", {}).get("worker_image")
                or docker.get("worker_image")
                or docker["image"]
            )
        wants_gpu = node["resources"].get("GPU", 0) > 0
        assert _image_is_gpu(image) == wants_gpu, f"node type {name} runs {image}"
    assert any(
        node["resources"].get("GPU", 0) > 0 for node in config["available_node_types"].values()
    )


@pytest.mark.parametrize("path", LAUNCHERS, ids=_ids(LAUNCHERS))
def test_launcher_nodes_use_token_auth(path: Path) -> None:
    """Every container runs with ``RAY_AUTH_MODE=token`` (``ray start`` on each node, the
    driver), and every node gets the same token: the launching user's ~/.ray/auth_token, copied
    by ``file_mounts``, never a file of the repository."""
    (config,) = _documents(path)
    options = " ".join(config["docker"].get("run_options", []))
    assert re.search(r"(^|\s)(-e|--env)[ =]RAY_AUTH_MODE=token(\s|$)", options), options
    mounts = config.get("file_mounts", {})
    assert mounts.get(TOKEN_FILE) == TOKEN_FILE, f"file_mounts must copy {TOKEN_FILE} to every node"
    assert "RAY_AUTH_TOKEN=" not in path.read_text(encoding="utf-8"), "a token in the config"


# --- KubeRay ---------------------------------------------------------------------------------


def _groups(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("head", spec["headGroupSpec"])] + [
        (group["groupName"], group) for group in spec["workerGroupSpecs"]
    ]


def _pvcs() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in _objects("PersistentVolumeClaim")}


@pytest.mark.parametrize("label, spec", CLUSTER_SPECS, ids=[label for label, _ in CLUSTER_SPECS])
def test_ray_cluster_groups_have_image_resources_and_shared_volume(
    label: str, spec: dict[str, Any]
) -> None:
    assert spec["headGroupSpec"] and len(spec["workerGroupSpecs"]) >= 1
    mlflow_uri = _composed(("cluster=ray_cluster",)).cluster.mlflow_uri
    for name, group in _groups(spec):
        pod = group["template"]["spec"]
        container = pod["containers"][0]  # KubeRay's Ray container is the first
        assert container["image"], f"{label} {name}: no image"
        requests = container["resources"]["requests"]
        assert "cpu" in requests and "memory" in requests, f"{label} {name}: requests"
        volumes = {v["name"]: v for v in pod["volumes"]}
        shared = [m for m in container["volumeMounts"] if m["mountPath"] == SHARED]
        assert shared, f"{label} {name}: nothing mounted at {SHARED}"
        claim = volumes[shared[0]["name"]]["persistentVolumeClaim"]["claimName"]
        assert "ReadWriteMany" in _pvcs()[claim]["spec"]["accessModes"], claim
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("MLFLOW_TRACKING_URI") == mlflow_uri, f"{label} {name}"
        if name != "head":
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name


@pytest.mark.parametrize("label, spec", CLUSTER_SPECS, ids=[label for label, _ in CLUSTER_SPECS])
def test_ray_cluster_has_a_gpu_group_on_the_gpu_image(label: str, spec: dict[str, Any]) -> None:
    gpu_groups = 0
    for name, group in _groups(spec):
        container = group["template"]["spec"]["containers"][0]
        limits = container["resources"].get("limits", {})
        requests = container["resources"]["requests"]
        wants_gpu = GPU in limits or GPU in requests
        if wants_gpu:
            gpu_groups += 1
            # Kubernetes takes extended resources from limits and wants requests to match.
            assert GPU in limits and requests.get(GPU, limits[GPU]) == limits[GPU], name
        assert _image_is_gpu(container["image"]) == wants_gpu, f"{label} {name}"
    assert gpu_groups >= 1, f"{label}: no worker group requests {GPU}"


@pytest.mark.parametrize("label, spec", CLUSTER_SPECS, ids=[label for label, _ in CLUSTER_SPECS])
def test_ray_cluster_uses_token_auth_from_a_secret(label: str, spec: dict[str, Any]) -> None:
    """KubeRay's ``authOptions.mode: token`` (the operator makes the Secret and sets the
    variables), or, in each Ray container, ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` from
    a Secret; never a token written in the manifest."""
    by_operator = spec.get("authOptions", {}).get("mode") == "token"
    for name, group in _groups(spec):
        env = {e["name"]: e for e in group["template"]["spec"]["containers"][0].get("env", [])}
        assert "value" not in env.get("RAY_AUTH_TOKEN", {}), f"{label} {name}: a literal token"
        if not by_operator:
            assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{label} {name}"
            assert env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef"), (
                f"{label} {name}: RAY_AUTH_TOKEN from a Secret, or authOptions.mode: token"
            )


@pytest.mark.parametrize(
    "path, job", _objects("RayJob"), ids=[_name(p) for p, _ in _objects("RayJob")]
)
def test_rayjob_runs_a_valid_sweep_and_cleans_up(path: Path, job: dict[str, Any]) -> None:
    spec = job["spec"]
    entrypoint = spec["entrypoint"].strip()
    assert entrypoint.startswith("esper sweep "), entrypoint
    cfg = _composed(tuple(_overrides(entrypoint)))  # a typo in an override raises ConfigError here
    assert cfg.cluster.address == "auto", "the sweep must join the RayJob's cluster"
    assert cfg.cluster.storage_path.startswith(f"{SHARED}/"), cfg.cluster.storage_path
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0


def test_mlflow_service_serves_the_presets_tracking_uri() -> None:
    uri = _composed(("cluster=ray_cluster",)).cluster.mlflow_uri
    match = re.fullmatch(r"http://([\w-]+):(\d+)", uri or "")
    assert match, f"ray_cluster's mlflow_uri {uri!r} is not http://SERVICE:PORT"
    services = {d["metadata"]["name"]: d for _, d in _objects("Service")}
    service = services[match.group(1)]
    assert int(match.group(2)) in [port["port"] for port in service["spec"]["ports"]]


# --- Dockerfile, versions, README -------------------------------------------------------------


def _run_lines(dockerfile: str) -> list[str]:
    joined = dockerfile.replace("\\\n", " ")
    return [line.strip()[len("RUN ") :] for line in joined.splitlines() if line.startswith("RUN ")]


def test_dockerfile_installs_torch_then_the_project_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG (\w+)=\"?([^\"\n]*)\"?$", text, re.MULTILINE))
    make_torch = re.search(r"^TORCH_SPEC \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert make_torch and args["TORCH_SPEC"] == make_torch.group(1), "same torch as the Makefile"
    pip = [shlex.split(cmd) for cmd in _run_lines(text) if "pip install" in cmd]
    assert any("${TORCH_SPEC}" in words for words in pip), "torch is installed from TORCH_SPEC"
    copies = re.findall(r"^COPY (?:--\S+ )*(.+)$", text, re.MULTILINE)
    project_dirs = {".", "-e ."} | {
        c.split()[-1].rstrip("/") for c in copies if "pyproject.toml" in c.split()[:-1]
    }
    targets = {w.removeprefix("./").rstrip("/") or "." for words in pip for w in words}
    assert targets & {d.removeprefix("./") or "." for d in project_dirs}, (
        "pip install of the project"
    )
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image runs as a non-root user"
    assert re.search(r'^CMD \["esper", "--help"\]$', text, re.MULTILINE)


def test_the_image_turns_token_auth_on_and_holds_no_token() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^ENV RAY_AUTH_MODE=token$", text, re.MULTILINE)
    assert not re.search(r"^(ENV|ARG)\s+RAY_AUTH_TOKEN", text, re.MULTILINE)
    assert not re.search(r"^(COPY|ADD) .*auth_token", text, re.MULTILINE)


def test_readme_says_where_the_token_comes_from() -> None:
    text = README.read_text(encoding="utf-8")
    assert "ray get-auth-token --generate" in text and "RAY_AUTH_TOKEN" in text


def test_every_image_names_the_same_ray_version_inside_pyprojects_range() -> None:
    version = _ray_version()
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    dependencies = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.M | re.S)
    assert dependencies, "pyproject.toml has no [project] dependencies list"
    ray = next(
        r
        for r in map(Requirement, re.findall(r'"([^"]+)"', dependencies.group(1)))
        if r.name == "ray"
    )
    assert version in ray.specifier, f"Ray {version} is outside pyproject's {ray}"
    base = re.search(r"^FROM (\S+)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert base and base.group(1).startswith("rayproject/ray:${RAY_VERSION}-py311")
    tag = re.compile(rf":ray{re.escape(version)}-py311(-gpu)?$")
    images = [(p, image) for p in YAMLS for d in _documents(p) for image in _images(d)]
    assert images
    for path, image in images:
        assert tag.search(image), f"{_name(path)}: {image} is not tagged ray{version}-py311[-gpu]"
    for label, spec in CLUSTER_SPECS:
        assert spec["rayVersion"] == version, label


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    lines = [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    commands = []
    for line in lines:
        start = re.search(r"\besper (?:sweep|run)\b", line)
        if start:
            commands.append(line[start.start() :].split(" #")[0].strip().strip("\"'"))
    return commands


def test_readme_sweep_and_run_commands_compose() -> None:
    commands = _readme_commands()
    assert commands, "cluster/README.md shows no `esper sweep`/`esper run` command"
    for command in commands:
        _composed(tuple(_overrides(command)))  # ConfigError names the bad key or value


def test_overrides_drop_the_commands_flags() -> None:
    line = "esper sweep --address auto search=pbt --resume /runs/x --fast cluster=ray_cluster"
    assert _overrides(line) == ["search=pbt", "cluster=ray_cluster"]
    assert _overrides("esper run --address=auto --dry-run reward=frugal") == ["reward=frugal"]


@pytest.mark.parametrize("path", LAUNCHERS, ids=_ids(LAUNCHERS))
def test_launcher_servers_listen_on_loopback_only(path: Path) -> None:
    """The Ray dashboard and the MLflow server on the head bind 127.0.0.1: reach them through
    ``ray attach -p`` or an SSH tunnel, never from the open network."""
    (config,) = _documents(path)
    head = " ; ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    for server in re.findall(r"mlflow (?:server|ui)[^;|&]*", head):
        assert "--host 127.0.0.1" in server, server
    assert "0.0.0.0" not in head


def test_kubernetes_services_stay_inside_the_cluster() -> None:
    """KubeRay binds the head's dashboard inside its pod network; no Service of ours exposes it
    or MLflow outside the cluster (reach them with ``kubectl port-forward``)."""
    services = [d for _, d in K8S if d["kind"] == "Service"]
    assert services, "the MLflow Service is expected"
    for service in services:
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]
