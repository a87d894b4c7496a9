"""The deployment artefacts in deploy/ render and validate offline.

Kubernetes: every overlay is rendered with `kubectl kustomize`, each document is validated against
the Kubernetes schemas (kubernetes-validate, strict: unknown fields fail), and the workloads are
checked for what the image relies on (non-root, read-only root with /tmp writable, limits), for
which process gets which secret, for what the Ingress exposes and for metrics scraping.
Compose: `docker-compose config` accepts the compose file with the committed example environment.
No cluster and no Docker engine are needed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from settings import _ENV

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = sorted(p.name for p in (DEPLOY / "k8s" / "overlays").iterdir() if (p / "kustomization.yaml").is_file())

# The oldest Kubernetes the manifests must be valid for; the newest schemas shipped are checked too.
OLDEST_KUBERNETES = "1.30.0"
SECRET_NAME = "hookyard-secrets"
# Keys every deployment puts in the Secret, and keys a feature needs only when it is used.
REQUIRED_SECRET_KEYS = {"DATABASE_URL", "REDIS_URL", "HOOKYARD_MASTER_KEYS"}
OPTIONAL_SECRET_KEYS = {"HOOKYARD_GOOGLE_CLIENT_SECRET", "HOOKYARD_CODEC_AUTH_TOKEN", "HOOKYARD_TEMPORAL_API_KEY"}
SECRET_KEYS = REQUIRED_SECRET_KEYS | OPTIONAL_SECRET_KEYS
# The processes that hold the master keys: stored secrets (api, worker) and the payload codec
# (dispatcher and worker encrypt Temporal payloads; the api's codec server decrypts them).
MASTER_KEY_PROCESSES = {"api", "dispatcher", "worker"}
# What the public Ingress may route; /metrics, /healthz and /readyz must stay inside the cluster.
PUBLIC_PREFIXES = {"/hooks", "/ingest", "/api", "/oauth", "/codec"}
# Pods of each process an overlay runs at least (the autoscaler's minimum, else the replica count).
MIN_PODS = {
    "dev": {"hookyard-api": 1, "hookyard-dispatcher": 1, "hookyard-worker": 1},
    "prod": {"hookyard-api": 3, "hookyard-dispatcher": 2, "hookyard-worker": 3},
}
APP_SERVICES = {"migrate", "api", "dispatcher", "worker"}

Doc = dict[str, Any]


def _name(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def _of_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    """(overlay name, its rendered documents)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: cannot render the kustomize overlays")
    path = DEPLOY / "k8s" / "overlays" / request.param
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert docs, f"{path} renders nothing"
    return request.param, docs


def test_every_document_is_valid_kubernetes(overlay: tuple[str, list[Doc]]) -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install kubernetes-validate)"
    )
    _, docs = overlay
    problems = []
    for version in sorted({OLDEST_KUBERNETES, kv.latest_version()}):
        for doc in docs:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                where = "/".join(str(p) for p in exc.absolute_path)
                problems.append(f"{_name(doc)} on {version}: {exc.message} at {where}")
            except kv.SchemaNotFoundError as exc:
                problems.append(f"{_name(doc)} on {version}: unknown to Kubernetes ({exc})")
    assert not problems, "\n".join(problems)


def _workloads(docs: list[Doc]) -> dict[str, Doc]:
    """Pod specs of the Deployments and Jobs, by workload name."""
    pods = {}
    for doc in docs:
        if doc["kind"] in {"Deployment", "Job"}:
            pods[_name(doc)] = doc["spec"]["template"]["spec"]
    return pods


def test_workloads_run_non_root_read_only_and_limited(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    workloads = _workloads(docs)
    assert {"Deployment/hookyard-api", "Deployment/hookyard-dispatcher", "Deployment/hookyard-worker"} <= set(workloads)
    assert "Job/hookyard-migrate" in workloads
    problems = []
    for name, pod in workloads.items():
        pod_sc = pod.get("securityContext") or {}
        tmp_volumes = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for container in pod["containers"]:
            where = f"{name} container {container['name']}"
            sc = container.get("securityContext") or {}
            if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
                problems.append(f"{where}: runs as uid 0")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem is writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: privilege escalation is allowed")
            if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
                problems.append(f"{where}: capabilities are not all dropped")
            resources = container.get("resources") or {}
            for kind in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(resources.get(kind) or {})
                if missing:
                    problems.append(f"{where}: no {kind} for {sorted(missing)}")
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            if mounts.get("/tmp") not in tmp_volumes:
                problems.append(f"{where}: /tmp is not a writable emptyDir")
    assert not problems, "\n".join(problems)


def _secret_refs(container: Doc) -> dict[str, Doc]:
    """The container's variables taken from a Secret key: variable -> secretKeyRef."""
    refs = {}
    for env in container.get("env", []):
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            refs[env["name"]] = ref
    return refs


def test_secret_is_referenced_by_name_never_rendered(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    assert not [_name(d) for d in docs if d["kind"] == "Secret"], "secrets must not be committed"
    referenced = set()
    for name, pod in _workloads(docs).items():
        for container in pod["containers"]:
            for variable, ref in _secret_refs(container).items():
                assert ref["name"] == SECRET_NAME, f"{name}: {variable} from unknown secret {ref['name']}"
                assert ref["key"] == variable, f"{name}: {variable} read from key {ref['key']}"
                # A missing required key must stop the pod; a missing optional one only turns a feature off.
                assert ref.get("optional", False) is (ref["key"] in OPTIONAL_SECRET_KEYS), f"{name}: {variable}"
                referenced.add(ref["key"])
            assert all("secretRef" not in src for src in container.get("envFrom", [])), name
    assert referenced == SECRET_KEYS
    for config in _of_kind(docs, "ConfigMap").values():
        assert not SECRET_KEYS & set(config.get("data", {})), f"secret in ConfigMap {config['metadata']['name']}"


def test_master_keys_reach_every_process_that_encrypts(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    holders = {
        container["name"]
        for pod in _workloads(docs).values()
        for container in pod["containers"]
        if "HOOKYARD_MASTER_KEYS" in _secret_refs(container)
    }
    assert holders == MASTER_KEY_PROCESSES


def test_ingress_routes_only_the_public_surface(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    routed = {
        path["path"]
        for ingress in _of_kind(docs, "Ingress").values()
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert {"/hooks", "/ingest", "/api", "/oauth"} <= routed
    assert routed <= PUBLIC_PREFIXES, f"routed beyond the public surface: {sorted(routed - PUBLIC_PREFIXES)}"


def _allows_ingress(policies: list[Doc], labels: dict[str, str], port: int) -> bool:
    """Whether some policy selecting pods with `labels` admits TCP traffic to `port` from anywhere it names."""
    for policy in policies:
        selector = policy["spec"]["podSelector"]
        if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
            continue
        if any(
            (labels.get(e["key"]) in e["values"]) != (e["operator"] == "In")
            for e in selector.get("matchExpressions") or []
        ):
            continue
        for rule in policy["spec"].get("ingress") or []:
            if rule.get("from") and any(p.get("port") == port for p in rule.get("ports") or []):
                return True
    return False


def test_every_process_can_be_scraped_by_prometheus(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    (config,) = _of_kind(docs, "ConfigMap").values()
    settings = config["data"]
    assert settings.get("HOOKYARD_METRICS_HOST") == "0.0.0.0", "a listener on loopback cannot be scraped"
    listeners = {
        "api": {"http": int(settings.get("HOOKYARD_PORT", 8000))},
        "dispatcher": {},
        "worker": {},
    }
    for process in ("dispatcher", "worker"):
        listeners[process] = {
            "metrics": int(settings["HOOKYARD_METRICS_PORT"]),
            "temporal-metrics": int(settings["HOOKYARD_TEMPORAL_METRICS_PORT"]),
        }
    policies = list(_of_kind(docs, "NetworkPolicy").values())
    for process, wanted in listeners.items():
        deployment = _of_kind(docs, "Deployment")[f"hookyard-{process}"]
        template = deployment["spec"]["template"]
        annotations = template["metadata"].get("annotations") or {}
        assert annotations.get("prometheus.io/scrape") == "true", process
        assert annotations.get("prometheus.io/path") == "/metrics", process
        (container,) = template["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        assert {name: ports.get(name) for name in wanted} == wanted, f"{process}: container ports {ports}"
        assert int(annotations.get("prometheus.io/port", 0)) == next(iter(wanted.values())), process
        labels = template["metadata"]["labels"]
        for port in wanted.values():
            assert _allows_ingress(policies, labels, port), f"{process}: port {port} is closed to Prometheus"


def test_probes_and_graceful_shutdown(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    deployments = _of_kind(docs, "Deployment")
    api = deployments["hookyard-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for name in ("hookyard-dispatcher", "hookyard-worker"):
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        probes = {"livenessProbe", "readinessProbe", "startupProbe"} & set(container)
        assert not probes, f"{name} serves no HTTP but has {sorted(probes)}"

    (config,) = _of_kind(docs, "ConfigMap").values()
    graceful_s = float(config["data"].get("HOOKYARD_WORKER_GRACEFUL_SHUTDOWN_S", 30))
    worker_grace = deployments["hookyard-worker"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert worker_grace > graceful_s, "the worker would be killed before its running actions finish"


def test_overlay_runs_its_pod_counts(overlay: tuple[str, list[Doc]]) -> None:
    name, docs = overlay
    if name not in MIN_PODS:
        pytest.skip(f"no expected pod counts for overlay {name!r}")
    autoscaled = {
        hpa["spec"]["scaleTargetRef"]["name"]: hpa["spec"]["minReplicas"]
        for hpa in _of_kind(docs, "HorizontalPodAutoscaler").values()
    }
    for deployment, doc in _of_kind(docs, "Deployment").items():
        if deployment in autoscaled:
            assert "replicas" not in doc["spec"], f"{deployment}: an apply would reset the autoscaler's count"
    counts = {
        deployment: autoscaled.get(deployment, doc["spec"].get("replicas", 1))
        for deployment, doc in _of_kind(docs, "Deployment").items()
    }
    assert counts == MIN_PODS[name]


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    # Only the env file given decides; nothing from this shell leaks into the interpolation.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOOKYARD_", "POSTGRES_"))}
    return subprocess.run(
        [compose, *args, "-f", str(DEPLOY / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def test_compose_file_is_valid_with_the_example_env() -> None:
    out = _compose("--env-file", str(DEPLOY / ".env.example"))
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert {"postgres", "redis", "temporal", "temporal-ui", *APP_SERVICES} <= set(services)

    images = {services[s]["image"] for s in APP_SERVICES}
    assert len(images) == 1, f"app services use different images: {images}"
    for service in APP_SERVICES:
        assert Path(services[service]["build"]["context"]) == ROOT
        assert services[service]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert services[service]["read_only"] is True

    assert services["migrate"]["restart"] == "no"
    for service in ("api", "dispatcher", "worker"):
        assert services[service]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert {s for s in services if "HOOKYARD_MASTER_KEYS" in (services[s].get("environment") or {})} == (
        MASTER_KEY_PROCESSES
    )
    for service in ("dispatcher", "worker"):
        environment = services[service]["environment"]
        assert environment["HOOKYARD_METRICS_HOST"] == "0.0.0.0", f"{service}: metrics only on loopback"
        assert int(environment["HOOKYARD_METRICS_PORT"]) > 0, f"{service}: no metrics listener"
        assert int(environment["HOOKYARD_TEMPORAL_METRICS_PORT"]) > 0, f"{service}: no Temporal SDK metrics"
    grace = re.fullmatch(r"(\d+)s", services["worker"]["stop_grace_period"])
    assert grace and int(grace.group(1)) > 30, "the worker would be killed before its running actions finish"

    # Every setting hookyard reads reaches the processes that use it (HOST and PORT are fixed by
    # the image); secrets go only to some, so the union is what counts.
    settable = {"HOOKYARD_HOST", "HOOKYARD_PORT"}
    for service in APP_SERVICES:
        settable |= set(services[service].get("environment") or {})
    assert set(_ENV) <= settable, f"not passed to the containers: {sorted(set(_ENV) - settable)}"
    assert not OPTIONAL_SECRET_KEYS & set(services["migrate"]["environment"]), "migrate needs no secrets"


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    out = _compose("--env-file", str(empty))
    assert out.returncode != 0
    assert "deploy/.env" in out.stderr


def test_image_copies_every_package() -> None:
    """The Dockerfile copies the packages one by one: a new package must be added there too."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", dockerfile, re.MULTILINE))
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert {f"!{p}/" for p in packages} <= set(ignore), "a package is left out of the build context"
    assert {"!pyproject.toml", "!README.md"} <= set(ignore)


def test_image_installs_the_tracing_extra() -> None:
    """HOOKYARD_OTEL_ENDPOINT works in the image only if the `otel` extra is installed."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"pip install \S*\.\[otel\]", dockerfile), "the image does not install hookyard[otel]"


def test_every_setting_is_documented_and_listed_for_kubernetes() -> None:
    """docs/operations.md describes every setting; config.env lists every non-secret one."""
    settings = {*_ENV, "HOOKYARD_MASTER_KEYS", "HOOKYARD_MASTER_KEYS_FILE"}
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "docs" / "operations.md").read_text()))
    assert settings <= documented, f"not in docs/operations.md: {sorted(settings - documented)}"
    config = (DEPLOY / "k8s" / "base" / "config.env").read_text()
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", config, re.MULTILINE))
    from_secrets = SECRET_KEYS | {"HOOKYARD_MASTER_KEYS_FILE"}
    missing = set(_ENV) - from_secrets - listed
    assert not missing, f"not listed in k8s/base/config.env: {sorted(missing)}"
