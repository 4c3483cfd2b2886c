"""Kubernetes on paper: the step Jobs dagster-k8s would create from `deploy/k8s/values.yaml`, checked without a cluster.

Each Job is built the way the k8s_job_executor builds it (`dagster_k8s.executor.K8sStepHandler.launch_step`): the
run launcher's configuration (the chart's `runLauncher` values), then the code location's own
(`includeConfigInLaunchedRuns`: its env, secrets and volumes), then the step's op tags, through dagster-k8s' own
`K8sContainerContext` and `construct_dagster_k8s_job`. The op tags come from the project's real definitions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import dagster as dg
import pytest
import yaml

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.execution import STEP_RESOURCES, executor_from_env
from ai_pipeline.defs.keys import CHUNK_EMBEDDINGS, DAILY_JOB, EMBED_SHARD, SFT_DATASET, VALIDATED_EVENTS
from ai_pipeline.settings import PROJECT_ROOT, Settings

VALUES = PROJECT_ROOT / "deploy" / "k8s" / "values.yaml"
DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart's `dagsterHome`
INSTANCE_CONFIG_MAP = "ai-pipeline-dagster-instance"  # the chart's instance ConfigMap, `<release>-dagster-instance`
# The chart's run-launcher template renames `runK8sConfig`'s keys to the launcher's `run_k8s_config` fields.
CHART_KEYS = {
    "containerConfig": "container_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "podSpecConfig": "pod_spec_config",
    "jobConfig": "job_config",
    "jobMetadata": "job_metadata",
    "jobSpecConfig": "job_spec_config",
}


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def defs(tmp_path_factory) -> dg.Definitions:
    return build_defs(
        Settings(home=tmp_path_factory.mktemp("home")), executor=executor_from_env({"AI_PIPELINE_EXECUTOR": "k8s"})
    )


def _step_job(values: dict, defs: dg.Definitions, asset: str) -> dict:
    """The Job of the step that materializes `asset`, as plain Kubernetes JSON."""
    import kubernetes
    from dagster_k8s import DagsterK8sJobConfig, construct_dagster_k8s_job
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import UserDefinedDagsterK8sConfig, get_user_defined_k8s_config

    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    [deployment] = values["dagster-user-deployments"]["deployments"]
    context = (
        K8sContainerContext(
            env_secrets=[s["name"] for s in launcher["envSecrets"]],
            run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
                {CHART_KEYS[key]: value for key, value in launcher["runK8sConfig"].items()}
            ),
        )
        .merge(
            K8sContainerContext(
                env=deployment["env"],
                env_secrets=[s["name"] for s in deployment["envSecrets"]],
                volumes=deployment["volumes"],
                volume_mounts=deployment["volumeMounts"],
            )
        )
        .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(_step_tags(defs, asset))))
    )
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(
            job_image=image,
            dagster_home=DAGSTER_HOME,
            image_pull_policy=deployment["image"]["pullPolicy"],
            instance_config_map=INSTANCE_CONFIG_MAP,
            postgres_password_secret=values["global"]["postgresqlSecretName"],
        ),
        args=["dagster", "api", "execute_step"],
        job_name=f"dagster-step-{asset.replace('_', '-')}",
        user_defined_k8s_config=context.run_k8s_config,
        component="step_worker",
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": DAILY_JOB}],
    )
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


def _step_tags(defs: dg.Definitions, asset: str) -> Mapping[str, str]:
    """The op tags of the asset's heavy step: its op, or for the embeddings (a graph) the step of each shard."""
    node = defs.resolve_assets_def(asset).node_def
    return node.node_named(EMBED_SHARD).definition.tags if isinstance(node, dg.GraphDefinition) else node.tags


def _container(job: dict) -> dict:
    [container] = job["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize(
    ("asset", "kind"),
    [(CHUNK_EMBEDDINGS, "embedding"), (SFT_DATASET, "training_gates"), ("fct_user_daily_activity", "dbt")],
)
def test_a_heavy_step_asks_for_its_own_resources(values, defs, asset, kind):
    container = _container(_step_job(values, defs, asset))
    assert container["resources"] == STEP_RESOURCES[kind]


def test_every_other_step_takes_the_run_launchers_resources(values, defs):
    container = _container(_step_job(values, defs, VALIDATED_EVENTS))
    default = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]["resources"]
    assert (
        container["resources"] == default == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    )


def test_a_step_job_runs_the_projects_image_with_its_environment_secrets_and_data(values, defs):
    job = _step_job(values, defs, CHUNK_EMBEDDINGS)
    container = _container(job)
    assert container["image"] == "registry.example.com/ai-pipeline:0.1.0"
    assert container["args"] == ["dagster", "api", "execute_step"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["AI_PIPELINE_EXECUTOR"] == "k8s" and env["AI_PIPELINE_HOME"] == "/data/ai-pipeline"
    assert env["AI_PIPELINE_CHROMA_URL"] == "http://chroma.ai-pipeline.svc.cluster.local:8000"
    assert env["HF_HUB_OFFLINE"] == "1" and env["DAGSTER_HOME"] == DAGSTER_HOME
    # The instance's password and every other secret come from Kubernetes Secrets, by reference.
    assert env["DAGSTER_PG_PASSWORD"] == {
        "secretKeyRef": {"name": "ai-pipeline-postgresql", "key": "postgresql-password"}
    }
    assert container["envFrom"] == [{"secretRef": {"name": "ai-pipeline-env"}}]  # once, from both places
    assert (
        container["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
        or {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    )
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "ai-pipeline-data"}} in volumes
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400


def test_the_values_hold_no_secret_and_the_code_location_runs_steps_as_jobs(values, defs):
    def leaves(node, path=()):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from leaves(value, (*path, str(key)))
        elif isinstance(node, list):
            for item in node:
                yield from leaves(item, path)
        else:
            yield path, str(node)

    # No URL with credentials anywhere, no password of the chart's own, and no secret among the plain variables.
    assert all("@" not in value and "postgresql://" not in value for _, value in leaves(values))
    assert "postgresqlPassword" not in values["postgresql"]
    [deployment] = values["dagster-user-deployments"]["deployments"]
    secret_words = ("DSN", "TOKEN", "PASSWORD", "WEBHOOK")
    assert not [e["name"] for e in deployment["env"] if any(word in e["name"] for word in secret_words)]
    assert values["generatePostgresqlPasswordSecret"] is False and values["postgresql"]["enabled"] is False
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "ai_pipeline.definitions"]
    assert {e["name"]: e["value"] for e in deployment["env"]}["AI_PIPELINE_EXECUTOR"] == "k8s"
    assert defs.resolve_job_def(DAILY_JOB).executor_def.name == "k8s"
    # The op tags are what dagster-k8s reads: valid JSON of its schema.
    tags = _step_tags(defs, CHUNK_EMBEDDINGS)
    assert json.loads(tags["dagster-k8s/config"]) == {"container_config": {"resources": STEP_RESOURCES["embedding"]}}


@pytest.mark.parametrize(
    ("name", "executor"), [(None, "in_process"), ("in_process", "in_process"), ("celery", "celery")]
)
def test_the_executor_is_chosen_by_configuration(name, executor):
    env = {"AI_PIPELINE_EXECUTOR": name} if name else {}
    assert executor_from_env(env).name == executor
    with pytest.raises(ValueError, match="AI_PIPELINE_EXECUTOR='dask': expected one of in_process, celery, k8s"):
        executor_from_env({"AI_PIPELINE_EXECUTOR": "dask"})
