"""deploy/: what can be checked without a cluster, a helm binary or a Docker daemon.

The Helm values name only keys Dagster's chart has (a fixture derived from the chart's schema);
what they configure is valid for the code that will read it: dagster-k8s builds the run pod's
Kubernetes Job from the run launcher's config, Dagster validates the instance's dagster.yaml, the
Kubernetes client's models take the manifests, and asn_pipeline.settings accepts the variables.
"""

from __future__ import annotations

import json
import re
import tomllib
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import sqlalchemy as sa
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.dagster_run import DagsterRun
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import construct_dagster_k8s_job
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.utils import pg_url_from_config

from asn_pipeline.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
VALUES = DEPLOY / "helm" / "values.yaml"
CHART_KEYS = Path(__file__).parent / "fixtures" / "dagster_helm_chart_keys.yaml"
IMAGE = "registry.example.org/asn-pipeline:0.1.0"
# What the chart fills in itself for a release "asn" in namespace "asn" (names only).
RELEASE = {
    "namespace": "asn",
    "service_account_name": "asn-dagster",
    "dagster_home": "/opt/dagster/dagster_home",
    "instance_config_map": "asn-dagster-instance",
}
MANIFEST_MODELS = {
    "CronJob": kubernetes.client.V1CronJob,
    "PersistentVolumeClaim": kubernetes.client.V1PersistentVolumeClaim,
    "Secret": kubernetes.client.V1Secret,
}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def values() -> dict[str, Any]:
    return load(VALUES)


def code_server(chart_values: dict[str, Any]) -> dict[str, Any]:
    [deployment] = chart_values["dagster-user-deployments"]["deployments"]
    return deployment


def k8s_launcher_values(chart_values: dict[str, Any]) -> dict[str, Any]:
    return chart_values["runLauncher"]["config"]["k8sRunLauncher"]


def unknown_keys(value: Any, allowed: Any, path: str = "") -> list[str]:
    """Key paths of ``value`` the allowed-keys tree does not have (see the fixture's header)."""
    if allowed is None:
        return []
    if allowed == "unlisted":
        listed = isinstance(value, dict) or (
            isinstance(value, list) and any(isinstance(v, dict) for v in value)
        )
        return [f"{path} (the fixture does not list this section's keys)"] if listed else []
    if "[]" in allowed:
        return [
            problem
            for index, item in enumerate(value or [])
            for problem in unknown_keys(item, allowed["[]"], f"{path}[{index}]")
        ]
    if not isinstance(value, dict):
        return [] if value is None else [f"{path} (a value where the chart expects keys)"]
    return [
        problem
        for key, item in value.items()
        for problem in (
            unknown_keys(item, allowed[key], f"{path}.{key}".lstrip("."))
            if key in allowed
            else [f"{path}.{key}".lstrip(".")]
        )
    ]


def test_the_values_name_only_keys_the_chart_has():
    assert unknown_keys(values(), load(CHART_KEYS)) == []


def test_the_key_check_names_keys_the_chart_does_not_have():
    wrong = values()
    wrong["runLauncher"]["config"]["k8sRunLauncher"]["volumeMount"] = []
    code_server(wrong)["dagsterApiGrpcArg"] = ["-m", "asn_pipeline.definitions"]
    wrong["rabbitmq"] = {"enabled": False}
    wrong["dagsterDeamon"] = {"enabled": True}

    assert unknown_keys(wrong, load(CHART_KEYS)) == [
        "dagster-user-deployments.deployments[0].dagsterApiGrpcArg",
        "runLauncher.config.k8sRunLauncher.volumeMount",
        "rabbitmq (the fixture does not list this section's keys)",
        "dagsterDeamon",
    ]


def run_launcher_config(chart_values: dict[str, Any]) -> dict[str, Any]:
    """The K8sRunLauncher config the chart renders from the values: its template
    dagsterYaml.runLauncher.k8s (helm/dagster/templates/helpers/instance/_run-launcher.tpl)
    transcribed for the keys it maps, with RELEASE for what the chart fills in itself."""
    k8s = k8s_launcher_values(chart_values)
    config = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or RELEASE["namespace"],
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": RELEASE["service_account_name"],
        "dagster_home": RELEASE["dagster_home"],
        "instance_config_map": RELEASE["instance_config_map"],
        "postgres_password_secret": chart_values["global"]["postgresqlSecretName"],
    }
    for key, name in (("envConfigMaps", "env_config_maps"), ("envSecrets", "env_secrets")):
        if k8s.get(key):
            config[name] = [source["name"] for source in k8s[key]]
    for key, name in (
        ("kubeconfigFile", "kubeconfig_file"),
        ("envVars", "env_vars"),
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("failPodOnRunFailure", "fail_pod_on_run_failure"),
        ("schedulerName", "scheduler_name"),
        ("securityContext", "security_context"),
    ):
        if k8s.get(key):
            config[name] = k8s[key]
    assert "image" not in k8s and "runK8sConfig" not in k8s, "transcribe these keys too"
    return config


def run_pod_job(monkeypatch) -> kubernetes.client.V1Job:
    """The Kubernetes Job dagster-k8s builds for a run from the launcher's config (as
    K8sRunLauncher.launch_run does), with no API server to send it to."""
    config = run_launcher_config(values())
    result = process_config(resolve_to_config_type(K8sRunLauncher.config_type()), config)
    assert result.success, [error.message for error in result.errors]
    monkeypatch.setattr("dagster_k8s.launcher.load_kubernetes_config", lambda **_: None)
    launcher = K8sRunLauncher(**result.value)
    run = DagsterRun(job_name="daily_asn_inventory", run_id=str(uuid.uuid4()))
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
    return construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=IMAGE, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name=f"dagster-run-{run.run_id}",
        pod_name=f"dagster-run-{run.run_id}",
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
    )


def test_dagster_k8s_builds_the_run_pod_from_the_run_launcher_config(monkeypatch):
    job = run_pod_job(monkeypatch)

    pod = job.spec.template.spec
    [container] = pod.containers
    assert container.image == IMAGE
    claims = {v.name: v.persistent_volume_claim for v in pod.volumes if v.persistent_volume_claim}
    assert {name: (c.claim_name, c.read_only) for name, c in claims.items()} == {
        "geoip": ("geoip", True),
        "cowrie-landing": ("cowrie-landing", True),
    }
    mounts = {m.mount_path: (m.name, m.read_only) for m in container.volume_mounts}
    assert mounts["/var/lib/GeoIP"] == ("geoip", True)
    assert mounts["/srv/cowrie/landing"] == ("cowrie-landing", True)
    env = {e.name: e.value for e in container.env}
    assert env["ASN_PIPELINE_MAXMIND_ASN_DB"] == "/var/lib/GeoIP/GeoLite2-ASN.mmdb"
    assert env["DAGSTER_HOME"] == RELEASE["dagster_home"]
    assert "DAGSTER_PG_PASSWORD" in env
    secrets = {source.secret_ref.name for source in container.env_from if source.secret_ref}
    assert "asn-pipeline-secrets" in secrets
    assert container.resources.requests["cpu"] == env["ASN_PIPELINE_PARSE_WORKERS"]
    # What would be sent to the API server serialises as a Job manifest.
    manifest = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    assert manifest["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]


def instance_yaml(chart_values: dict[str, Any]) -> dict[str, Any]:
    """The parts of the instance's dagster.yaml the chart renders from these values
    (templates/configmap-instance.yaml and helpers/instance/_postgresql.tpl, transcribed)."""
    pg = chart_values["postgresql"]
    postgres_db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams") or {},
    }
    if pg.get("postgresqlScheme"):
        postgres_db["scheme"] = pg["postgresqlScheme"]
    storage = {"config": {"postgres_db": postgres_db}}
    rendered = {
        "scheduler": {"module": "dagster.core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            **storage,
        },
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            **storage,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            **storage,
        },
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": run_launcher_config(chart_values),
        },
        "telemetry": {"enabled": chart_values["telemetry"]["enabled"]},
    }
    daemon = chart_values["dagsterDaemon"]
    if daemon["enabled"] and daemon["runCoordinator"]["enabled"]:
        queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
        rendered["run_coordinator"] = {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"max_concurrent_runs": queued.get("maxConcurrentRuns")},
        }
    return {**rendered, **(chart_values.get("additionalInstanceConfig") or {})}


def test_dagster_accepts_the_instance_config_the_chart_renders(tmp_path, monkeypatch):
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml(values())))

    config, _ = dagster_instance_config(str(tmp_path), "dagster.yaml")
    ref = InstanceRef.from_dir(str(tmp_path))

    assert ref.run_coordinator_data.class_name == "QueuedRunCoordinator"
    assert ref.run_launcher_data.class_name == "K8sRunLauncher"
    assert config["concurrency"] == {
        "runs": {"max_concurrent_runs": 4},
        "pools": {"default_limit": 4},
    }
    # The pods get DAGSTER_PG_PASSWORD from the Secret; the config names the variable.
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "secret")
    storage = config["run_storage"]["config"]
    checked = process_config(resolve_to_config_type(PostgresRunStorage.config_type()), storage)
    assert checked.success, [error.message for error in checked.errors]
    url = pg_url_from_config(checked.value)
    # With SQLAlchemy 2.1 the URL must name psycopg2, the driver the image has.
    assert sa.make_url(url).drivername == "postgresql+psycopg2"
    sa.create_engine(url).dispose()  # the dialect and its driver load; nothing connects


def test_dagster_refuses_run_limits_in_both_places(tmp_path):
    """Why the chart's run-coordinator block is off: with a run limit there as well as in
    additionalInstanceConfig, Dagster refuses the instance."""
    both = values()
    both["dagsterDaemon"]["runCoordinator"] = {
        "enabled": True,
        "type": "QueuedRunCoordinator",
        "config": {"queuedRunCoordinator": {"maxConcurrentRuns": 4}},
    }
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml(both)))

    with pytest.raises(DagsterInvalidConfigError, match="incompatible"):
        dagster_instance_config(str(tmp_path), "dagster.yaml")


def settings_variables() -> set[str]:
    source = (REPO / "asn_pipeline" / "settings.py").read_text()
    return set(re.findall(r"\bASN_PIPELINE_[A-Z0-9_]+\b", source))


def manifests() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def secret_data(name: str) -> dict[str, str]:
    [secret] = [m for m in manifests() if m["kind"] == "Secret" and m["metadata"]["name"] == name]
    return secret["stringData"]


def test_the_variables_are_ones_the_settings_read_and_accept():
    chart_values = values()
    server_env = code_server(chart_values)["env"]
    run_env = dict(v.split("=", 1) for v in k8s_launcher_values(chart_values)["envVars"])
    secret = secret_data("asn-pipeline-secrets")

    assert server_env == run_env, "run pods and the code server see the same variables"
    assert set(server_env) | set(secret) <= settings_variables()
    assert "ASN_PIPELINE_DB_URL" in secret and "ASN_PIPELINE_DB_URL" not in server_env
    settings = Settings.from_environ({**server_env, **secret})
    assert settings.db_url.startswith("postgresql+psycopg2://")

    for deployment_env, mounts in (
        (server_env, code_server(chart_values)["volumeMounts"]),
        (run_env, k8s_launcher_values(chart_values)["volumeMounts"]),
    ):
        for variable in ("LANDING_DIR", "MAXMIND_ASN_DB", "MAXMIND_CITY_DB"):
            path = Path(deployment_env[f"ASN_PIPELINE_{variable}"])
            [mount] = [m for m in mounts if path.is_relative_to(m["mountPath"])]
            assert mount["readOnly"] is True, variable


def test_volumes_and_secret_references_are_kubernetes_objects():
    chart_values = values()
    launcher = k8s_launcher_values(chart_values)
    for spec in (code_server(chart_values), launcher):
        volumes = [
            k8s_model_from_dict(
                kubernetes.client.V1Volume, k8s_snake_case_dict(kubernetes.client.V1Volume, v)
            )
            for v in spec["volumes"]
        ]
        for mount in spec["volumeMounts"]:
            model = kubernetes.client.V1VolumeMount
            k8s_model_from_dict(model, k8s_snake_case_dict(model, mount))
        assert {m["name"] for m in spec["volumeMounts"]} == {v.name for v in volumes}
        for source in spec["envSecrets"]:
            model = kubernetes.client.V1SecretEnvSource
            k8s_model_from_dict(model, k8s_snake_case_dict(model, source))
        model = kubernetes.client.V1ResourceRequirements
        k8s_model_from_dict(model, k8s_snake_case_dict(model, spec["resources"]))
    assert code_server(chart_values)["volumes"] == launcher["volumes"]
    assert code_server(chart_values)["volumeMounts"] == launcher["volumeMounts"]


def test_the_manifests_are_kubernetes_objects_that_fit_the_values():
    documents = manifests()
    for document in documents:
        model = MANIFEST_MODELS[document["kind"]]
        k8s_model_from_dict(model, k8s_snake_case_dict(model, document))
    names = {(d["kind"], d["metadata"]["name"]) for d in documents}
    chart_values = values()

    claims = {v["persistentVolumeClaim"]["claimName"] for v in code_server(chart_values)["volumes"]}
    assert {("PersistentVolumeClaim", claim) for claim in claims} <= names
    for source in code_server(chart_values)["envSecrets"]:
        assert ("Secret", source["name"]) in names
    assert "postgresql-password" in secret_data(chart_values["global"]["postgresqlSecretName"])

    [cronjob] = [d for d in documents if d["kind"] == "CronJob"]
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    for variable in ("GEOIPUPDATE_ACCOUNT_ID", "GEOIPUPDATE_LICENSE_KEY"):
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secret_data(ref["name"])
    # geoipupdate writes <edition>.mmdb into its database directory, on the volume the
    # pipeline's pods mount where ASN_PIPELINE_MAXMIND_* point.
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == env["GEOIPUPDATE_DB_DIR"]["value"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    [geoip] = [v for v in code_server(chart_values)["volumes"] if v["name"] == "geoip"]
    assert (
        volume["persistentVolumeClaim"]["claimName"] == geoip["persistentVolumeClaim"]["claimName"]
    )
    written = {f"{edition}.mmdb" for edition in env["GEOIPUPDATE_EDITION_IDS"]["value"].split()}
    server_env = code_server(chart_values)["env"]
    read = {Path(server_env[f"ASN_PIPELINE_MAXMIND_{db}_DB"]).name for db in ("ASN", "CITY")}
    assert read == written


def test_the_image_the_chart_and_the_project_name_the_same_code_location():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    module = pyproject["tool"]["dagster"]["module_name"]
    assert pyproject["tool"]["dg"]["project"]["code_location_target_module"] == module
    [cmd] = [
        json.loads(line.removeprefix("CMD"))
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.startswith("CMD")
    ]
    assert cmd[:3] == ["dagster", "api", "grpc"]
    assert cmd[cmd.index("-m") + 1] == module
    deployment = code_server(values())
    assert deployment["dagsterApiGrpcArgs"] == ["-m", module]
    assert int(cmd[cmd.index("-p") + 1]) == deployment["port"]
    assert f"EXPOSE {deployment['port']}" in (DEPLOY / "Dockerfile").read_text()
    [location] = load(REPO / "workspace.yaml")["load_from"]
    assert location["python_module"]["module_name"] == module
