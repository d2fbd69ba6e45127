"""Every cluster config and manifest in cluster/ validates against the real schema it will meet.

* Ray cluster launcher configs: Ray's own `prepare_config` (fills the provider's defaults, as
  `ray up` does) then `validate_config` (the installed ray/autoscaler/ray-schema.json).
* KubeRay RayCluster / RayJob: KubeRay's CRD schemas, strict variants (unknown fields rejected),
  found through $MCSCALE_KUBERAY_SCHEMAS (default: cluster/kuberay/schemas).
* Kubernetes core objects (Namespace, Secret, ServiceAccount, the MLflow Deployment, ...):
  kubernetes-validate, strict, against a pinned Kubernetes version.
* The MLflow compose file: the Compose Specification's JSON Schema (cluster/mlflow/schemas).

Each validator is also shown a misspelt field, so a test that cannot fail would be noticed.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from scaling.errors import UserInputError
from scaling.study.submit import kuberay_errors, kuberay_rayjob, kuberay_schema_dir

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
KUBERNETES_VERSION = "1.31.0"  # a version every maintained managed Kubernetes offers in 2026
LAUNCHER_CONFIGS = sorted((CLUSTER / "ray").glob("*.yaml"))
KUBERAY_MANIFESTS = [CLUSTER / "kuberay" / "raycluster.yaml", CLUSTER / "kuberay" / "rayjob.yaml"]
SECRET_NAME = "mcscale-study-env"
SECRET_KEYS = {"MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MCSCALE_S3_ENDPOINT"}


def core_manifests() -> list[tuple[Path, dict]]:
    """Every Kubernetes core object under cluster/ (all documents of every YAML file, CRDs excluded)."""
    out = []
    for path in sorted(CLUSTER.rglob("*.yaml")):
        if path.parent.name == "ray" or "compose" in path.name:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and not str(doc.get("apiVersion", "")).startswith("ray.io/"):
                out.append((path, doc))
    return out


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# ============================================================================ Ray cluster launcher
def ray_validate(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_there_are_launcher_configs():
    assert {p.name for p in LAUNCHER_CONFIGS} >= {"aws-gpu.yaml", "onprem-gpu.yaml"}


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_passes_rays_validation(path):
    prepared = ray_validate(load(path))
    assert prepared["head_node_type"] in prepared["available_node_types"]
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "--metrics-export-port=8080" in head_start and "--dashboard-host=0.0.0.0" in head_start
    assert "--metrics-export-port=8080" in " ".join(prepared["worker_start_ray_commands"])
    assert "cluster.env" in " ".join(prepared["file_mounts"].values())  # settings from a file, not inline
    text = path.read_text()
    assert "AWS_SECRET_ACCESS_KEY=" not in text and "MLFLOW_TRACKING_URI=" not in text


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_validation_rejects_a_misspelt_field(path):
    from jsonschema import ValidationError

    config = load(path)
    config["idle_timout_minutes"] = config.pop("idle_timeout_minutes")
    with pytest.raises(ValidationError, match="idle_timout_minutes"):
        ray_validate(config)
    config = load(path)
    config["auth"]["ssh_usr"] = config["auth"].pop("ssh_user")
    with pytest.raises(ValidationError, match="ssh_usr"):
        ray_validate(config)


def test_aws_config_has_a_cpu_head_and_8_gpu_workers():
    config = load(CLUSTER / "ray" / "aws-gpu.yaml")
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"]["GPU"] == 0
    workers = {name: t["node_config"]["InstanceType"] for name, t in types.items() if name != config["head_node_type"]}
    assert set(workers.values()) == {"p4d.24xlarge", "p5.48xlarge"}  # the 8-GPU A100 and H100 instances
    assert config["docker"]["image"].endswith(":0.1.0")


def test_node_image_copies_what_exists_and_matches_the_ray_pin():
    import re

    dockerfile = (CLUSTER / "Dockerfile").read_text()
    sources = [src for line in dockerfile.splitlines() if line.startswith("COPY")
               for src in line.split()[1:-1] if not src.startswith("--")]
    assert sources and all((REPO / src).exists() for src in sources), sources
    assert {"scaling", "kernels", "studies", "pyproject.toml"} <= set(sources)
    ray_pin = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert re.search(rf"^FROM rayproject/ray:{re.escape(ray_pin)}-py311", dockerfile, re.M), ray_pin
    assert load(CLUSTER / "kuberay" / "raycluster.yaml")["spec"]["rayVersion"] == ray_pin


# ============================================================================ KubeRay
def test_schemas_are_found_through_the_setting(monkeypatch, tmp_path):
    folder = kuberay_schema_dir()
    assert folder is not None and (folder / "rayjob_v1_strict.json").is_file()
    monkeypatch.setenv("MCSCALE_KUBERAY_SCHEMAS", str(tmp_path))
    assert kuberay_schema_dir() == tmp_path
    with pytest.raises(UserInputError, match="MCSCALE_KUBERAY_SCHEMAS"):
        kuberay_errors(load(KUBERAY_MANIFESTS[0]))


@pytest.mark.parametrize("path", KUBERAY_MANIFESTS, ids=lambda p: p.name)
def test_kuberay_manifest_validates_strictly(path):
    manifest = load(path)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert kuberay_errors(manifest, strict=True) == []
    assert kuberay_errors(manifest, strict=False) == []


def test_strict_kuberay_schema_rejects_misspelt_fields():
    cluster = load(KUBERAY_MANIFESTS[0])
    group = cluster["spec"]["workerGroupSpecs"][0]
    group["idleTimeoutSecond"] = group.pop("idleTimeoutSeconds")
    errors = kuberay_errors(cluster)
    assert any(e.startswith("spec/workerGroupSpecs/0") and "idleTimeoutSecond'" in e for e in errors), errors
    assert kuberay_errors(cluster, strict=False) == []  # the published schema would silently drop it
    job = load(KUBERAY_MANIFESTS[1])
    job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    assert any("imagee" in e for e in kuberay_errors(job))


def test_rayjob_runs_the_paper_ladder_on_the_rayclusters_shape():
    cluster, job = (load(p) for p in KUBERAY_MANIFESTS)
    assert job["spec"]["entrypoint"] == "mcscale run /home/ray/mcscale/studies/paper-ladder.yaml --address auto"
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]
    generated, _ = kuberay_rayjob(REPO / "studies" / "paper-ladder.yaml",
                                  spec_in_image="/home/ray/mcscale/studies/paper-ladder.yaml")
    assert generated == job, "cluster/kuberay/rayjob.yaml is stale: regenerate it (see its header)"


def _containers(cluster_spec: dict) -> list[dict]:
    pods = [cluster_spec["headGroupSpec"]["template"]["spec"]]
    pods += [g["template"]["spec"] for g in cluster_spec["workerGroupSpecs"]]
    return [c for pod in pods for c in pod["containers"]]


def test_secrets_come_from_the_secret_not_inline():
    cluster = load(KUBERAY_MANIFESTS[0])
    for container in _containers(cluster["spec"]):
        assert {"secretRef": {"name": SECRET_NAME}} in container["envFrom"]
        inline = {e["name"] for e in container.get("env", [])}
        assert not inline & SECRET_KEYS, inline
    secret = load(CLUSTER / "kuberay" / "secret.yaml")
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == SECRET_NAME
    assert set(secret["stringData"]) >= SECRET_KEYS


def test_gpu_worker_group_fits_the_paper_ladder():
    cluster = load(KUBERAY_MANIFESTS[0])
    group = cluster["spec"]["workerGroupSpecs"][0]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    spec = yaml.safe_load((REPO / "studies" / "paper-ladder.yaml").read_text())
    per_pod = int(limits["nvidia.com/gpu"]) // spec["resources"]["gpus_per_trial"]
    assert per_pod == 8 and int(limits["cpu"]) >= per_pod * spec["resources"]["cpus_per_trial"]
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    assert group["maxReplicas"] * per_pod >= spec["concurrency"]


# ============================================================================ Kubernetes core objects
def test_core_objects_are_there():
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in core_manifests()}
    assert {("Secret", SECRET_NAME), ("ServiceAccount", "mcscale"), ("Namespace", "mcscale")} <= kinds
    assert {"Deployment", "Service", "StatefulSet"} <= {k for k, _ in kinds}  # the MLflow stack


@pytest.mark.parametrize("item", core_manifests(), ids=lambda item: f"{item[0].parent.name}/{item[0].name}:"
                         f"{item[1]['kind']}/{item[1]['metadata']['name']}")
def test_core_object_validates_with_kubernetes_validate(item):
    import kubernetes_validate

    _, doc = item
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validate_rejects_a_misspelt_field():
    import kubernetes_validate

    account = next(doc for _, doc in core_manifests() if doc["kind"] == "ServiceAccount")
    bad = dict(account, automountServiceAccountTokn=False)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


# ============================================================================ the MLflow compose file
def compose_errors(compose: dict) -> list[str]:
    import json

    from jsonschema import Draft7Validator

    schema = json.loads((CLUSTER / "mlflow" / "schemas" / "compose-spec.json").read_text())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in Draft7Validator(schema).iter_errors(compose)]


def test_compose_file_validates_and_rejects_a_misspelt_key():
    compose = load(CLUSTER / "mlflow" / "compose.yaml")
    assert compose_errors(compose) == []
    assert {"postgres", "s3", "mlflow"} <= set(compose["services"])
    mlflow = compose["services"]["mlflow"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    compose["services"]["mlflow"]["enviroment"] = compose["services"]["mlflow"].pop("environment")
    assert any("enviroment" in e for e in compose_errors(compose))


def test_compose_variables_are_all_in_the_env_example():
    import re

    used = set(re.findall(r"\$\{([A-Z0-9_]+)", (CLUSTER / "mlflow" / "compose.yaml").read_text()))
    example = dict(line.split("=", 1) for line in (CLUSTER / "mlflow" / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert used and used == set(example), (used, set(example))
