"""`mcscale submit SPEC --kuberay`: a ready RayJob manifest for a spec, validated as the shipped ones are.

Run through the CLI as a user would; every manifest it prints is checked against KubeRay's strict
CRD schema here too (not only by the command itself), and the spec it carries is decoded back.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import yaml

from scaling.study.submit import SPEC_ENV, SPEC_NAME_ENV, kuberay_errors
from tests.study.test_submit import write_spec

REPO = Path(__file__).resolve().parents[2]


def mcscale(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaling", "submit", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=_env())


def _env() -> dict[str, str]:
    import os

    return dict(os.environ, PYTHONPATH=str(REPO))


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def containers(job: dict) -> list[dict]:
    cluster = job["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    return [c for pod in pods for c in pod["containers"]]


def test_prints_a_valid_rayjob_that_carries_the_spec(tmp_path):
    spec = write_spec(tmp_path, "kuberay-probe", "s3://bucket/studies")
    result = mcscale(str(spec), "--kuberay", "--image", "registry.example/mcscale:dev", "--namespace", "research")
    assert result.returncode == 0, result.stderr
    job = yaml.safe_load(result.stdout)
    assert kuberay_errors(job) == []
    assert job["kind"] == "RayJob" and job["metadata"] == {
        "name": "mcscale-kuberay-probe", "namespace": "research",
        "labels": {"app.kubernetes.io/name": "mcscale", "mcscale/study": "kuberay-probe"}}
    assert job["spec"]["entrypoint"] == "python -m scaling.study.submit --address auto"
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    assert base64.b64decode(env[SPEC_ENV]) == spec.read_bytes() and env[SPEC_NAME_ENV] == spec.name
    assert {c["image"] for c in containers(job)} == {"registry.example/mcscale:dev"}
    assert all({"secretRef": {"name": "mcscale-study-env"}} in c["envFrom"] for c in containers(job))
    assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["backoffLimit"] >= 1


def test_output_file_notes_and_gpu_groups_grow_with_concurrency(tmp_path):
    spec = write_spec(tmp_path, "wide", "./mcscale-runs",
                      extra="").read_text().replace("resources: {cpus_per_trial: 1}",
                                                    "resources: {cpus_per_trial: 8, gpus_per_trial: 1}")
    spec = spec.replace("concurrency: 2", "concurrency: 100")
    path = tmp_path / "wide.yaml"
    path.write_text(spec)
    out = tmp_path / "job.yaml"
    result = mcscale(str(path), "--kuberay", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and "kubectl apply -f" in result.stderr
    assert "KubeRay deletes with the cluster" in result.stderr  # local storage would vanish with the cluster
    job = yaml.safe_load(out.read_text())
    assert kuberay_errors(job) == []
    assert job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] == 13  # ceil(100 / 8 per pod)


def test_bad_spec_exits_2_and_writes_nothing(tmp_path):
    spec = write_spec(tmp_path, "bad", "s3://b/p", extra="concurency: 3\n")
    out = tmp_path / "job.yaml"
    assert_user_error(mcscale(str(spec), "--kuberay", "-o", str(out)), "concurency")
    assert not out.exists()
    good = write_spec(tmp_path, "good", "s3://b/p")
    assert_user_error(mcscale(str(good), "--kuberay", "--address", "http://head:8265"), "--address", "--kuberay")
    assert_user_error(mcscale(str(good), "-o", str(out)), "--output", "--kuberay")
    assert not out.exists()


def test_a_trial_larger_than_any_worker_pod_exits_2(tmp_path):
    spec = write_spec(tmp_path, "huge", "s3://b/p").read_text().replace(
        "resources: {cpus_per_trial: 1}", "resources: {cpus_per_trial: 8, gpus_per_trial: 16}").replace(
        "batch_tokens: 1024", "batch_tokens: 4096")  # 32 sequences: they split over 16 workers
    path = tmp_path / "huge.yaml"
    path.write_text(spec)
    assert_user_error(mcscale(str(path), "--kuberay"), "resources.gpus_per_trial", "16 GPUs")


def test_a_misspelt_cluster_template_exits_2_naming_the_field(tmp_path):
    template = yaml.safe_load((REPO / "cluster" / "kuberay" / "raycluster.yaml").read_text())
    template["spec"]["headGroupSpec"]["rayStartParam"] = template["spec"]["headGroupSpec"].pop("rayStartParams")
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(template))
    spec = write_spec(tmp_path, "tpl", "s3://b/p")
    assert_user_error(mcscale(str(spec), "--kuberay", "--cluster-template", str(path)), "--cluster-template",
                      "rayStartParam")
    assert_user_error(mcscale(str(spec), "--kuberay", "--cluster-template", str(tmp_path / "none.yaml")),
                      "--cluster-template", "cannot read")
