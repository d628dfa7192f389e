"""Pure manifest builders: ``build_*_manifest(...) -> dict``, no Kubernetes API calls.

One trial = one framework × worker count. For each trial the operator applies:

* Ray: a ``ray.io/v1`` **RayJob** with an inline ``rayClusterSpec`` (head with ``num-cpus: 0``
  plus one worker group of exactly N replicas). Its entrypoint runs ``testbed runner`` as the
  driver *on the head* (``--address auto``), so the timed work does not go through Ray Client.
  :func:`build_raycluster_manifest` renders the same cluster on its own (for ``keepClusters``).
* Dask: a ``kubernetes.dask.org/v1`` **DaskCluster** (scheduler + N workers) and a
  ``batch/v1`` **Job** running ``testbed runner`` as the Dask client pod.
* Optionally (``--network-policy``) a ``networking.k8s.io/v1`` **NetworkPolicy** that admits
  traffic to the trial's pods only from the trial's own pods (:func:`build_networkpolicy_manifest`).

Every object carries an owner reference to its Benchmark (deleted with it) and the labels
``testbed.dev/benchmark``, ``testbed.dev/framework``, ``testbed.dev/workers`` and
``testbed.dev/trial``.  Every pod template of a trial carries the same labels (the Ray head,
workers and the RayJob's submitter, the Dask scheduler and workers, the runner Job), so
``testbed.dev/trial`` selects all of the trial's pods.  Pods run as non-root, without privilege
escalation, with all capabilities dropped and a RuntimeDefault seccomp profile.
"""
from __future__ import annotations

import copy
import functools
import importlib.metadata
import json
import re
from pathlib import Path
from typing import Any

import yaml

from bench.frameworks import cluster_kind
from bench.kube import names
from bench.kube.names import (
    FAULT_PODS_ENV,
    RESULT_OWNER_ENV,
    RUNNER_ACCOUNT,
    STARTUP_TIMEOUT_ENV,
    TRIAL_LABEL,
    WORKER_CONTAINER_ENV,
    label_value,
    trial_name,
)
from bench.operator_spec import OperatorSpec
from bench.spec import BenchmarkSpec

from .crd import GROUP, KIND, VERSION

RAY_GCS_PORT = 6379
RAY_DASHBOARD_PORT = 8265
RAY_METRICS_PORT = 8080
DASK_SCHEDULER_PORT = 8786
DASK_DASHBOARD_PORT = 8787
DASK_WORKER_DASHBOARD_PORT = 8788
RUNNER_USER = 1000
DISTRIBUTION = "raydask-testbed"   # pyproject.toml's [project] name


@functools.cache
def runner_ray_version() -> str:
    """The Ray version the runner image pins: the project's own ``ray[default]==X`` requirement.

    One source of truth, pyproject.toml's pin, read from the installed distribution's metadata
    (``Requires-Dist``). The operator image installs the project with ``--no-deps`` (no Ray
    there), and its metadata still carries the pin; the runner image installs exactly that pin.
    From a source tree without an install, pyproject.toml itself is read."""
    try:
        requirements = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        requirements = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    for req in requirements:
        m = re.fullmatch(r"ray(\[[^\]]*\])?\s*==\s*([0-9][0-9A-Za-z.]*)\s*(;.*)?", req.strip())
        if m and "extra ==" not in (m.group(3) or ""):
            return m.group(2)
    raise RuntimeError(f"{DISTRIBUTION} pins no exact Ray version (ray==X) to put in rayVersion")


def labels(benchmark: str, framework: str, workers: int) -> dict[str, str]:
    """The labels of a trial's objects and pods. ``testbed.dev/trial`` (the trial's name, unique
    in the namespace) is what the trial's NetworkPolicy selects."""
    return {names.APP_NAME_LABEL: "testbed", names.MANAGED_BY_LABEL: names.MANAGED_BY,
            names.BENCHMARK_LABEL: label_value(benchmark), names.FRAMEWORK_LABEL: framework,
            names.WORKERS_LABEL: str(workers),
            TRIAL_LABEL: trial_name(benchmark, framework, workers)}


def owner_reference(benchmark: dict[str, Any]) -> dict[str, Any]:
    meta = benchmark["metadata"]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def _metadata(benchmark: dict[str, Any], name: str, framework: str, workers: int) -> dict[str, Any]:
    return {"name": name, "namespace": benchmark["metadata"]["namespace"],
            "labels": labels(benchmark["metadata"]["name"], framework, workers),
            "ownerReferences": [owner_reference(benchmark)]}


def _resources(spec: BenchmarkSpec) -> dict[str, Any]:
    r = spec.worker_resources
    amounts = {"cpu": r.cpu, "memory": r.memory}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True, "runAsUser": RUNNER_USER}


def _pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": RUNNER_USER, "fsGroup": RUNNER_USER,
            "seccompProfile": {"type": "RuntimeDefault"}}


def _container(name: str, image: str, args: list[str], spec: BenchmarkSpec,
               ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent", "args": args,
        "resources": _resources(spec), "securityContext": _security(),
        "env": [{"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
                {"name": "OMP_NUM_THREADS",
                 "value": str(max(1, int(spec.worker_resources.cpu_count())))}],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if ports:
        c["ports"] = ports
    return c


def _one_worker(container: dict[str, Any]) -> None:
    """The container holds one worker (a Ray worker node, a Dask worker and its nanny): its
    samplers also record the container's memory working set (bench.measure.CgroupMemory)."""
    container["env"].append({"name": WORKER_CONTAINER_ENV, "value": "1"})


def _pod(containers: list[dict[str, Any]], restart: str | None = None) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": containers, "securityContext": _pod_security(),
                           "volumes": [{"name": "tmp", "emptyDir": {}}]}
    if restart:
        pod["restartPolicy"] = restart
    return pod


def result_target(benchmark: dict[str, Any], framework: str, workers: int) -> str:
    """``NAMESPACE/NAME`` of the trial's result ConfigMap (see :mod:`bench.kube.channel`)."""
    trial = trial_name(benchmark["metadata"]["name"], framework, workers)
    return f"{benchmark['metadata']['namespace']}/{names.result_configmap_name(trial)}"


def runner_args(benchmark: dict[str, Any], spec: BenchmarkSpec, framework: str, workers: int,
                address: str) -> list[str]:
    """The ``testbed runner`` command line: the spec travels as JSON (no shell involved), the
    results go to the trial's ConfigMap."""
    payload = spec.model_dump(by_alias=True, exclude_none=True)
    payload["baselines"] = False
    return ["testbed", "runner", "--framework", framework, "--workers", str(workers),
            "--address", address, "--spec-json", json.dumps(payload, sort_keys=True),
            "--result-configmap", result_target(benchmark, framework, workers)]


def _credentials(benchmark: dict[str, Any], container: dict[str, Any]) -> None:
    """The runner reads S3 credentials from a Secret reference, never from literal values."""
    secret = OperatorSpec.of(benchmark.get("spec") or {}).credentials_secret
    if secret:
        container["envFrom"] = [{"secretRef": {"name": secret}}]


def _owner_env(benchmark: dict[str, Any]) -> dict[str, str]:
    return {RESULT_OWNER_ENV: json.dumps(owner_reference(benchmark), sort_keys=True)}


def _runner_env(benchmark: dict[str, Any]) -> dict[str, str]:
    """What every runner gets: the result owner, and how long it may wait for its cluster's
    N workers to register (``startupTimeoutSeconds``: a Dask runner starts as soon as the
    DaskCluster is Running, before its scheduler pod may exist)."""
    return {**_owner_env(benchmark), STARTUP_TIMEOUT_ENV: str(startup_timeout_seconds(benchmark))}


# -- fault injection ------------------------------------------------------------------------
def fault_pods(benchmark: dict[str, Any], framework: str, workers: int) -> dict[str, str]:
    """Which pods the runner of a faulted trial may delete: its own trial's worker pods (and
    its head or scheduler pod), by label, and how the framework names each worker."""
    trial = f"{TRIAL_LABEL}={trial_name(benchmark['metadata']['name'], framework, workers)}"
    ns = benchmark["metadata"]["namespace"]
    if cluster_kind(framework) == "dask":
        return {"namespace": ns, "workers": f"{trial},dask.org/component=worker",
                "head": f"{trial},dask.org/component=scheduler",
                "identity": "env:DASK_WORKER_NAME"}
    return {"namespace": ns, "workers": f"{trial},ray.io/node-type=worker",
            "head": f"{trial},ray.io/node-type=head", "identity": "podIP"}


def _fault_env(benchmark: dict[str, Any], spec: BenchmarkSpec, framework: str,
               workers: int) -> list[dict[str, str]]:
    if spec.faults is None:
        return []
    return [{"name": FAULT_PODS_ENV,
             "value": json.dumps(fault_pods(benchmark, framework, workers), sort_keys=True)}]


# -- Ray ------------------------------------------------------------------------------------
def ray_cluster_spec(spec: BenchmarkSpec, workers: int, image: str,
                     pod_labels: dict[str, str]) -> dict[str, Any]:
    """The inline RayCluster spec of a trial.

    * ``rayVersion``: the Ray the runner image pins (:func:`runner_ray_version`). KubeRay
      (``ray-operator/controllers/ray/common/pod.go``, ``initLivenessAndReadinessProbe`` and
      ``supportsUnifiedHealthCheck``) gives Ray >= 2.53 containers HTTP probes (``GET
      /api/healthz`` on the dashboard agent's port 52365); without a version it injects exec
      probes that run ``wget`` in a bash shell, which the runner image does not have. Token
      auth needs it too (``utils/validation.go``: ``authOptions.mode`` token requires
      ``rayVersion`` >= 2.52.0).
    * ``authOptions``: ``spec.ray.authMode``. With ``token``, KubeRay creates a Secret named
      after the RayCluster (key ``auth_token``, ``raycluster_controller.go``
      ``reconcileAuthSecret``) and gives the head, the workers, their ``wait-gcs-ready`` init
      container and the RayJob's submitter ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` from
      that Secret (``common/pod.go`` ``SetContainerTokenAuthEnvVars``, ``rayjob_controller.go``
      ``configureSubmitterContainer``). The driver (the runner) runs on the head and inherits
      both. With ``disabled`` KubeRay injects nothing; ``RAY_AUTH_MODE=disabled`` is set on the
      Ray containers so that no token file in the image turns auth on by itself.
    """
    cpus = str(max(1, int(spec.worker_resources.cpu_count())))
    head_ports = [{"containerPort": RAY_GCS_PORT, "name": "gcs-server"},
                  {"containerPort": RAY_DASHBOARD_PORT, "name": "dashboard"},
                  {"containerPort": RAY_METRICS_PORT, "name": "metrics"}]
    head = _container("ray-head", image, [], spec, head_ports)
    # The GCS's node-failure detection, as the spec states it (and the local engine sets it).
    head["env"] += [{"name": k, "value": v} for k, v in spec.ray.head_env().items()]
    worker = _container("ray-worker", image, [], spec,
                        [{"containerPort": RAY_METRICS_PORT, "name": "metrics"}])
    _one_worker(worker)
    if spec.ray.auth_mode == "disabled":
        for c in (head, worker):
            c["env"].append({"name": "RAY_AUTH_MODE", "value": "disabled"})
    return {
        "rayVersion": runner_ray_version(),
        "authOptions": {"mode": spec.ray.auth_mode},
        "headGroupSpec": {
            # The head only schedules (like the local engine's head); the driver runs here.
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0",
                               "metrics-export-port": str(RAY_METRICS_PORT)},
            "serviceType": "ClusterIP",
            "template": {"metadata": {"labels": dict(pod_labels)},
                         "spec": _pod([head])},
        },
        "workerGroupSpecs": [{
            "groupName": "workers",
            "replicas": workers, "minReplicas": workers, "maxReplicas": workers,
            "rayStartParams": {"num-cpus": cpus, "metrics-export-port": str(RAY_METRICS_PORT)},
            "template": {"metadata": {"labels": dict(pod_labels)},
                         "spec": _pod([worker])},
        }],
    }


def _submitter_template(image: str, pod_labels: dict[str, str]) -> dict[str, Any]:
    """The RayJob's submitter pod (``ray job submit`` in K8sJobMode): KubeRay's default
    (head image, 500m/200Mi requested, 1 CPU/1Gi limit, restartPolicy Never; KubeRay fills in
    the command), plus the trial's labels and the restricted security context."""
    return {
        "metadata": {"labels": dict(pod_labels)},
        "spec": {
            "containers": [{
                "name": "ray-job-submitter", "image": image, "imagePullPolicy": "IfNotPresent",
                "resources": {"requests": {"cpu": "500m", "memory": "200Mi"},
                              "limits": {"cpu": "1", "memory": "1Gi"}},
                "securityContext": _security()}],
            "restartPolicy": "Never",
            "securityContext": _pod_security(),
        },
    }


def build_raycluster_manifest(benchmark: dict[str, Any], spec: BenchmarkSpec, workers: int,
                              image: str) -> dict[str, Any]:
    name = trial_name(benchmark["metadata"]["name"], "ray", workers)
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster",
            "metadata": _metadata(benchmark, name, "ray", workers),
            "spec": ray_cluster_spec(spec, workers, image,
                                     labels(benchmark["metadata"]["name"], "ray", workers))}


def build_rayjob_manifest(benchmark: dict[str, Any], spec: BenchmarkSpec, workers: int,
                          image: str, framework: str = "ray") -> dict[str, Any]:
    """RayJob for ``ray`` or ``dask-on-ray`` trials: the runner is the job's driver on the head."""
    name = trial_name(benchmark["metadata"]["name"], framework, workers)
    entrypoint = " ".join(_shell_quote(a) for a in runner_args(benchmark, spec, framework, workers,
                                                               "auto"))
    pod_labels = labels(benchmark["metadata"]["name"], framework, workers)
    cluster = ray_cluster_spec(spec, workers, image, pod_labels)
    # The driver runs on the head: it publishes its results with the runner's service account.
    cluster["headGroupSpec"]["template"]["spec"]["serviceAccountName"] = RUNNER_ACCOUNT
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    # The workers read partitioned datasets themselves (the libraries tier), so they get the
    # S3 credentials too.
    for container in (head, cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]):
        _credentials(benchmark, container)
    head["env"] += _fault_env(benchmark, spec, framework, workers)
    return {
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": _metadata(benchmark, name, framework, workers),
        "spec": {
            "entrypoint": entrypoint,
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": not spec_keep_clusters(benchmark),
            "ttlSecondsAfterFinished": 0,
            # Counted from the RayJob's creation: cluster start-up plus the run.
            "activeDeadlineSeconds": (startup_timeout_seconds(benchmark)
                                      + run_deadline_seconds(spec)),
            "backoffLimit": 0,
            "runtimeEnvYAML": yaml.safe_dump({"env_vars": _runner_env(benchmark)}),
            "rayClusterSpec": cluster,
            "submitterPodTemplate": _submitter_template(image, pod_labels),
        },
    }


def run_deadline_seconds(spec: BenchmarkSpec, grace: int = 120) -> int:
    """How long a trial's runner may take once its cluster is ready: ``timeoutSeconds`` per
    workload (the engine enforces each) plus a grace for connecting and loading data."""
    return spec.timeout_seconds * max(1, len(spec.workloads)) + grace


def startup_timeout_seconds(benchmark: dict[str, Any]) -> int:
    return int(OperatorSpec.of(benchmark.get("spec") or {}).startup_timeout_seconds)


def spec_keep_clusters(benchmark: dict[str, Any]) -> bool:
    return bool(OperatorSpec.of(benchmark.get("spec") or {}).keep_clusters)


def _shell_quote(arg: str) -> str:
    # RayJob's entrypoint is a shell command line: quote every argument (the spec JSON holds
    # user strings).
    import shlex

    return shlex.quote(arg)


# -- Dask -----------------------------------------------------------------------------------
def build_daskcluster_manifest(benchmark: dict[str, Any], spec: BenchmarkSpec, workers: int,
                               image: str) -> dict[str, Any]:
    name = trial_name(benchmark["metadata"]["name"], "dask", workers)
    nthreads = str(max(1, int(spec.worker_resources.cpu_count())))
    memory = str(spec.worker_resources.memory_bytes())
    scheduler = _container(
        "scheduler", image, ["dask", "scheduler", "--port", str(DASK_SCHEDULER_PORT),
                             "--dashboard-address", f":{DASK_DASHBOARD_PORT}"], spec,
        [{"name": "tcp-comm", "containerPort": DASK_SCHEDULER_PORT, "protocol": "TCP"},
         {"name": "http-dashboard", "containerPort": DASK_DASHBOARD_PORT, "protocol": "TCP"}])
    scheduler["env"] += [{"name": k, "value": v}
                         for k, v in spec.dask.scheduler_env().items()]
    scheduler["readinessProbe"] = {"httpGet": {"port": "http-dashboard", "path": "/health"},
                                   "initialDelaySeconds": 0, "periodSeconds": 5}
    worker = _container(
        "worker", image, ["dask", "worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", nthreads,
                          "--memory-limit", memory, "--dashboard",
                          "--dashboard-address", f":{DASK_WORKER_DASHBOARD_PORT}",
                          "--nanny" if spec.dask.nanny else "--no-nanny"],
        spec, [{"name": "http-dashboard", "containerPort": DASK_WORKER_DASHBOARD_PORT,
                "protocol": "TCP"}])
    _credentials(benchmark, worker)  # workers read partitioned S3 datasets themselves
    _one_worker(worker)
    # The Dask operator copies the DaskCluster's labels to its pods as well; these say so
    # explicitly (and win over them).
    pod_meta = {"labels": labels(benchmark["metadata"]["name"], "dask", workers)}
    return {
        "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskCluster",
        "metadata": _metadata(benchmark, name, "dask", workers),
        "spec": {
            "worker": {"replicas": workers, "metadata": copy.deepcopy(pod_meta),
                       "spec": _pod([worker])},
            "scheduler": {
                "metadata": copy.deepcopy(pod_meta),
                "spec": _pod([scheduler]),
                "service": {
                    "type": "ClusterIP",
                    "selector": {"dask.org/cluster-name": name, "dask.org/component": "scheduler"},
                    "ports": [{"name": "tcp-comm", "protocol": "TCP", "port": DASK_SCHEDULER_PORT,
                               "targetPort": "tcp-comm"},
                              {"name": "http-dashboard", "protocol": "TCP",
                               "port": DASK_DASHBOARD_PORT, "targetPort": "http-dashboard"}],
                },
            },
        },
    }


def dask_scheduler_address(benchmark: dict[str, Any], workers: int) -> str:
    name = trial_name(benchmark["metadata"]["name"], "dask", workers)
    ns = benchmark["metadata"]["namespace"]
    # dask-kubernetes names the scheduler Service "<cluster>-scheduler".
    return f"tcp://{name}-scheduler.{ns}.svc:{DASK_SCHEDULER_PORT}"


def build_runner_job_manifest(benchmark: dict[str, Any], spec: BenchmarkSpec, framework: str,
                              workers: int, image: str, address: str) -> dict[str, Any]:
    """The Dask client pod: a Job running ``testbed runner`` against the scheduler. It starts
    once the DaskCluster is Running, which dask-kubernetes sets as soon as the scheduler
    Service exists: its deadline covers waiting for the workers (``startupTimeoutSeconds``)
    and the run."""
    name = names.runner_job_name(trial_name(benchmark["metadata"]["name"], framework, workers))
    runner = _container("runner", image, runner_args(benchmark, spec, framework, workers, address),
                        spec)
    runner["env"] += [{"name": k, "value": v} for k, v in _runner_env(benchmark).items()]
    runner["env"] += _fault_env(benchmark, spec, framework, workers)
    _credentials(benchmark, runner)
    runner["terminationMessagePolicy"] = "FallbackToLogsOnError"
    runner["securityContext"]["readOnlyRootFilesystem"] = True
    pod = _pod([runner], restart="Never")
    pod["serviceAccountName"] = RUNNER_ACCOUNT
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": _metadata(benchmark, name, framework, workers),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": (startup_timeout_seconds(benchmark)
                                      + run_deadline_seconds(spec)),
            "ttlSecondsAfterFinished": 3600,
            "template": {"metadata": {"labels": labels(benchmark["metadata"]["name"], framework,
                                                       workers)},
                         "spec": pod},
        },
    }


# -- NetworkPolicy --------------------------------------------------------------------------
# Where the trial's pods serve Prometheus metrics: Ray head and workers (metrics-export-port),
# the Dask scheduler's and workers' dashboards (/metrics). The chart's PodMonitors scrape these.
METRICS_PORTS = (RAY_METRICS_PORT, DASK_DASHBOARD_PORT, DASK_WORKER_DASHBOARD_PORT)


def build_networkpolicy_manifest(benchmark: dict[str, Any], framework: str, workers: int,
                                 metrics_from: list[dict[str, Any]] | None = None,
                                 dashboard_from: list[dict[str, Any]] | None = None,
                                 ) -> dict[str, Any]:
    """The trial's NetworkPolicy: its pods (``testbed.dev/trial=<trial>``) accept connections
    only from pods of the same trial, plus

    * ``metrics_from`` (NetworkPolicyPeers, e.g. Prometheus' namespace) on the metrics ports;
    * ``dashboard_from`` (e.g. the KubeRay operator) on the Ray dashboard port, for ``ray`` and
      ``dask-on-ray`` trials: KubeRay reads the RayJob's status from the head's dashboard.

    Only ingress is restricted. Egress stays open: the runner needs the API server (its result
    ConfigMap) and S3/HTTP datasets, whose addresses the operator cannot know.
    Connections from the node itself (kubelet probes) are always allowed by Kubernetes."""
    name = benchmark["metadata"]["name"]
    tname = trial_name(name, framework, workers)
    own = {"matchLabels": {TRIAL_LABEL: tname}}
    ingress: list[dict[str, Any]] = [{"from": [{"podSelector": copy.deepcopy(own)}]}]
    if metrics_from:
        ingress.append({"from": copy.deepcopy(list(metrics_from)),
                        "ports": [{"protocol": "TCP", "port": p} for p in METRICS_PORTS]})
    if dashboard_from and cluster_kind(framework) == "ray":
        ingress.append({"from": copy.deepcopy(list(dashboard_from)),
                        "ports": [{"protocol": "TCP", "port": RAY_DASHBOARD_PORT}]})
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _metadata(benchmark, tname, framework, workers),
        "spec": {"podSelector": own, "policyTypes": ["Ingress"], "ingress": ingress},
    }
