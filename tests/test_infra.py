"""infra/ is validated, not just written: every YAML file parses; Kubernetes manifests pass the
Kubernetes JSON schemas (kubernetes-validate, offline, strict: unknown fields fail); KubeRay
resources pass infra/k8s/schemas/kuberay.schema.json and their pod templates Kubernetes' own
PodTemplate schema; the Airflow Helm values' pod pieces pass the same; the ConfigMap's Encore
profile loads with Encore's config loader; the compose file passes the Compose Specification's
JSON schema as shipped in the compose-go module (fetched from the Go module proxy)."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from encore.config import load_config
from tests.conftest import REPO

INFRA = REPO / "infra"
K8S = INFRA / "k8s"
K8S_VERSION = "1.31.0"
COMPOSE_GO = "github.com/compose-spec/compose-go/v2@v2.16.2"
KUBERAY_SCHEMA = json.loads((K8S / "schemas" / "kuberay.schema.json").read_text())
# Top-level keys of the official Airflow chart's values.yaml that infra/k8s/airflow/values.yaml may set.
AIRFLOW_CHART_KEYS = {"defaultAirflowRepository", "defaultAirflowTag", "airflowVersion", "executor", "env",
                      "extraEnvFrom", "volumes", "volumeMounts", "dags", "config", "scheduler", "workers",
                      "postgresql", "images", "webserver", "apiServer", "triggerer", "dagProcessor", "data",
                      "fernetKeySecretName", "logs", "secret", "extraSecrets", "extraConfigMaps"}


def _yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))


def _manifests():
    for path in sorted(K8S.rglob("*.yaml")):
        if path.parent.name == "airflow":      # Helm values, not a manifest
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            yield path, doc


def _pod_templates(resource: dict) -> list[dict]:
    spec = resource["spec"]
    clusters = [spec] if resource["kind"] == "RayCluster" else [spec.get("rayClusterSpec") or {}]
    templates = [spec["submitterPodTemplate"]] if "submitterPodTemplate" in spec else []
    for cluster in clusters:
        if "headGroupSpec" in cluster:
            templates.append(cluster["headGroupSpec"]["template"])
        templates += [group["template"] for group in cluster.get("workerGroupSpecs", [])]
    return templates


def validate_manifest(resource: dict) -> None:
    """Raise when a manifest does not match its schema (Kubernetes' own, or KubeRay's CRD subset)."""
    import kubernetes_validate
    if resource.get("apiVersion", "").startswith("ray.io/"):
        jsonschema.validate(resource, KUBERAY_SCHEMA)
        for template in _pod_templates(resource):
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                                          "template": template}, K8S_VERSION, strict=True)
    else:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def test_every_yaml_file_under_infra_parses_into_mappings():
    files = _yaml_files()
    assert len(files) >= 8, files
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), path


def test_kubernetes_manifests_match_their_schemas():
    kinds = set()
    for path, resource in _manifests():
        try:
            validate_manifest(resource)
        except Exception as exc:   # name the file: the validator's message alone does not
            pytest.fail(f"{path.relative_to(REPO)} {resource.get('kind')}: {exc}")
        kinds.add(resource["kind"])
    assert {"RayCluster", "RayJob", "ServiceAccount", "Role", "RoleBinding", "Pod", "ConfigMap", "Namespace"} <= kinds


def test_the_validators_reject_typos_and_wrong_types():
    import kubernetes_validate
    cluster = next(doc for _, doc in _manifests() if doc["kind"] == "RayCluster")
    typo = copy.deepcopy(cluster)
    typo["spec"]["workerGroupSpec"] = typo["spec"].pop("workerGroupSpecs")
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(typo)
    bad_pod = copy.deepcopy(cluster)
    bad_pod["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(bad_pod)
    role = next(doc for _, doc in _manifests() if doc["kind"] == "Role")
    bad_role = copy.deepcopy(role)
    bad_role["rules"][0]["verbs"] = "create"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(bad_role)


def test_airflow_helm_values_use_known_keys_and_valid_pod_pieces():
    values = yaml.safe_load((K8S / "airflow" / "values.yaml").read_text())
    assert set(values) <= AIRFLOW_CHART_KEYS, set(values) - AIRFLOW_CHART_KEYS
    container = {"name": "airflow", "image": f"{values['defaultAirflowRepository']}:{values['defaultAirflowTag']}",
                 "env": values["env"], "envFrom": yaml.safe_load(values["extraEnvFrom"]),
                 "volumeMounts": values["volumeMounts"],
                 "resources": values["scheduler"]["resources"]}
    validate_manifest({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "airflow-scheduler"},
                       "spec": {"containers": [container], "volumes": values["volumes"],
                                "serviceAccountName": values["scheduler"]["serviceAccount"]["name"]}})
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["ENCORE_PROFILE"] == "k8s"


def test_the_config_map_profile_loads_and_matches_the_spark_properties(tmp_path):
    config_map = yaml.safe_load((K8S / "encore-config.yaml").read_text())
    user_file = tmp_path / "encore.yaml"
    user_file.write_text(config_map["data"]["encore.yaml"])
    config = load_config("k8s", str(user_file), environ={})
    assert config.get("spark.master").startswith("k8s://https://")
    assert config.get("airflow.submit") == "cluster" and config.get("ray.dashboard")
    assert config.path("lakehouse").startswith("s3a://")
    properties = dict(line.split(None, 1) for line in (K8S / "spark" / "spark-k8s.conf").read_text().splitlines()
                      if line.strip() and not line.startswith("#"))
    assert properties["spark.master"] == config.get("spark.master")
    for key, value in config.section("spark")["conf"].items():
        if key in properties:
            assert properties[key] == str(value), key
    template = K8S / "spark" / "executor-pod-template.yaml"
    assert properties["spark.kubernetes.executor.podTemplateFile"].endswith(template.name)


def _compose_spec_schema() -> dict:
    if not shutil.which("go"):
        pytest.skip("Go is not installed: the Compose Specification schema comes from the compose-go module "
                    "on the Go module proxy")
    done = subprocess.run(["go", "mod", "download", "-json", COMPOSE_GO], capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        pytest.skip(f"could not download {COMPOSE_GO} from the Go module proxy: {done.stdout[-300:]}{done.stderr[-300:]}")
    return json.loads((Path(json.loads(done.stdout)["Dir"]) / "schema" / "compose-spec.json").read_text())


def test_compose_file_matches_the_compose_specification_and_the_compose_profile():
    compose = yaml.safe_load((INFRA / "compose" / "compose.yaml").read_text())
    schema = _compose_spec_schema()
    jsonschema.validate(compose, schema)
    typo = copy.deepcopy(compose)
    typo["services"]["mlflow"]["depend_on"] = typo["services"]["mlflow"].pop("depends_on")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, schema)
    services = compose["services"]
    for name, service in services.items():
        assert ":" in service["image"], f"{name}: pin an image tag"
    config = load_config("compose", environ={})
    hosts = {config.get("spark.master"), config.get("ray.address"), config.get("ray.dashboard"),
             config.get("mlflow.tracking_uri"), config.get("spark.conf")["spark.hadoop.fs.s3a.endpoint"]}
    for host in ("spark-master", "ray-head", "mlflow", "minio"):
        assert host in services and any(f"//{host}:" in h for h in hosts), host
    assert services["airflow"]["environment"]["ENCORE_PROFILE"] == "compose"
