"""Where a run's steps execute, chosen by configuration (`AI_PIPELINE_EXECUTOR`); the graph is the same in each mode.

- `in_process` (the default: a laptop, `make demo`, the tests): every step of a run in the run's own process, one
  after another. Every step that writes the warehouse takes the single `duckdb_warehouse` slot anyway, and a
  process per step would cost seconds of start-up each.
- `celery`: each step is a Celery task that a worker of the fleet runs (`ai-pipeline worker`), through the broker in
  `AI_PIPELINE_CELERY_BROKER` (Redis or RabbitMQ); the instance must be PostgreSQL, which every worker reaches, and
  its concurrency pools hold across the fleet. `AI_PIPELINE_CELERY_BACKEND` names the result backend (the broker's
  by default).
- `k8s`: each step is a Kubernetes Job (dagster-k8s), with the requests and limits its op tags ask for
  (`STEP_RESOURCES`) and the environment and secrets of the Helm values in `deploy/k8s/`.

The executors of the cluster modes are imported only when chosen (dagster-celery, dagster-k8s: the `cluster` extra).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import dagster as dg

EXECUTORS = ("in_process", "celery", "k8s")
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
# Celery settings of the run's process and of every worker: one step at a time per worker process, and a step whose
# worker died mid-way goes back to the queue for another worker (the steps are idempotent per partition).
CELERY_SETTINGS = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
}


def celery_broker(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The broker and the result backend (`AI_PIPELINE_CELERY_BROKER`, `AI_PIPELINE_CELERY_BACKEND`)."""
    env = os.environ if env is None else env
    broker = env.get("AI_PIPELINE_CELERY_BROKER") or DEFAULT_BROKER
    return broker, env.get("AI_PIPELINE_CELERY_BACKEND") or broker


def executor_name(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    name = env.get("AI_PIPELINE_EXECUTOR") or "in_process"
    if name not in EXECUTORS:
        raise ValueError(f"AI_PIPELINE_EXECUTOR={name!r}: expected one of {', '.join(EXECUTORS)}")
    return name


# dagster-k8s reads a step's container settings from this op tag.
K8S_CONFIG_TAG = "dagster-k8s/config"
# What a heavy step asks of its node, by kind: the model's embedding batches, dbt's build, the training-data gates'
# MinHash indexes. Every other step takes the executor's defaults (deploy/k8s/values.yaml).
STEP_RESOURCES = {
    "embedding": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "6Gi"}},
    "dbt": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "3Gi"}},
    "training_gates": {"requests": {"cpu": "1", "memory": "3Gi"}, "limits": {"memory": "4Gi"}},
}


def heavy_step(kind: str) -> dict[str, str]:
    """The op tags of a heavy step of `kind`: its Kubernetes requests and limits (ignored by the other executors)."""
    return {K8S_CONFIG_TAG: json.dumps({"container_config": {"resources": STEP_RESOURCES[kind]}}, sort_keys=True)}


def executor_from_env(env: Mapping[str, str] | None = None) -> dg.ExecutorDefinition:
    """The executor `AI_PIPELINE_EXECUTOR` names (`in_process` when unset)."""
    name = executor_name(env)
    if name == "celery":
        from dagster_celery import celery_executor

        broker, backend = celery_broker(env)
        return celery_executor.configured(
            {"broker": broker, "backend": backend, "config_source": CELERY_SETTINGS}, name="celery"
        )
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        # The image, environment and secrets come from the K8sRunLauncher's configuration (the Helm values); the
        # executor adds nothing but a bound on one run's pods.
        return k8s_job_executor.configured({"max_concurrent": 8}, name="k8s")
    return dg.in_process_executor
