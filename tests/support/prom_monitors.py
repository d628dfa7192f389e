"""Prometheus Operator monitors -> plain Prometheus ``scrape_configs``.

The chart renders ``PodMonitor`` and ``ServiceMonitor`` objects (charts/testbed/templates/
podmonitors.yaml, servicemonitor.yaml). Under kube-prometheus-stack the Prometheus Operator
turns each of them into scrape jobs with ``kubernetes_sd_configs``. This module does the same
translation in Python, so that a plain ``prometheus`` process running outside the cluster
(Debian's 2.42 here) discovers and scrapes exactly the targets the chart's monitors would
select, and a test can check that they really exist and export metrics.

Upstream source this follows (read, not copied):
    prometheus-operator/prometheus-operator, pkg/prometheus/promcfg.go
    at commit 002266347d12f6ee0ef0b4a774dfcc613d2d9547 (a v0.7x/v0.8x-era tree: it already
    has scrape classes, Prometheus 3 support and the ``serviceDiscoveryRole`` field),
    functions ``generatePodMonitorConfig``, ``generateServiceMonitorConfig``,
    ``generateK8SSDConfig``, ``getNamespacesFromNamespaceSelector``, ``initRelabelings``,
    ``generateRunningFilter``, ``generateRelabelConfig``, ``sanitizeLabelName``,
    ``AddHonorLabels`` / ``AddHonorTimestamps``.

What is reproduced, in upstream's order (the order of relabel rules matters, e.g. the
ServiceMonitor's ``pod`` label is set twice and the last rule wins):

* job name ``podMonitor/<ns>/<name>/<i>`` / ``serviceMonitor/<ns>/<name>/<i>`` (``i`` = index
  of the endpoint in the monitor), ``honor_labels`` (upstream always writes it, default
  false), ``honor_timestamps`` only when the endpoint sets it;
* one ``kubernetes_sd_configs`` entry: role ``pod`` for PodMonitors; role ``endpoints`` for
  ServiceMonitors, which is upstream's default (``endpointslice`` only when the Prometheus
  resource sets ``serviceDiscoveryRole: EndpointSlice``, which kube-prometheus-stack does
  not by default); namespaces from ``namespaceSelector``: ``any: true`` -> no namespace
  list (all namespaces), ``matchNames`` -> those, neither -> the monitor's own namespace;
* ``scrape_interval``, ``scrape_timeout``, ``metrics_path``, ``params``, ``scheme``,
  ``follow_redirects``, ``enable_http2`` from the endpoint when set;
* relabelings: ``job`` -> ``__tmp_prometheus_job_name``; the selector as keep/drop rules on
  ``__meta_kubernetes_{pod,service}_label_<k>`` + ``..._labelpresent_<k>`` (matchLabels
  sorted by key, regex ``(<value>);true`` -- upstream does not regex-escape the value, nor
  do we; matchExpressions In/NotIn/Exists/DoesNotExist); dropping pods in phase
  Failed/Succeeded unless ``filterRunning: false``; the port-name keep on
  ``__meta_kubernetes_pod_container_port_name`` (pods) or
  ``__meta_kubernetes_endpoint_port_name`` (endpoints); the target labels namespace,
  pod, container (and node, service for ServiceMonitors); ``targetLabels`` /
  ``podTargetLabels``; ``job`` (``<ns>/<name>`` for PodMonitors, the Service's name for
  ServiceMonitors; ``jobLabel`` overrides); ``endpoint`` = the port name; then the
  endpoint's own ``relabelings``; ``metricRelabelings`` -> ``metric_relabel_configs``.

Deliberately left out (none of it is used by the chart; a monitor that uses one of the
fields raises ValueError rather than being scraped differently from upstream):

* TLS (``tlsConfig``), ``basicAuth``, ``authorization``, ``oauth2``, bearer tokens,
  ``proxyUrl``: they need Secrets resolved from the cluster;
* the deprecated ``targetPort`` (only the named ``port`` is supported);
* sharding: upstream appends a ``hashmod`` on ``__address__`` with ``modulus: <shards>``
  and a keep on ``$(SHARD)`` that its config-reloader substitutes; with one shard (the
  default) it keeps every target, and a plain Prometheus would not substitute ``$(SHARD)``;
* scrape classes, ``attachMetadata``, enforced namespace labels, sample/target/label
  limits, ``scrapeProtocols``, ``bodySizeLimit``, the DaemonSet mode, and everything set
  on the Prometheus resource (external labels, ``ignoreNamespaceSelectors``,
  ``podTargetLabels``, ``overrideHonorLabels``...): we assume kube-prometheus-stack's
  defaults. Which monitors a Prometheus *selects* (its serviceMonitorSelector etc.) is
  also out of scope: every monitor passed in is translated.
* ordering of jobs: upstream emits every ServiceMonitor job before any PodMonitor job, in
  its own stable order of monitors; we keep the input order (the targets are the same).

Upstream silently ignores a matchExpressions operator it does not know (its ``switch`` has
no default); this module raises ValueError instead, as it does for unknown kinds.

Instead of upstream's in-cluster service account (or ``apiserverConfig``) the generated
``kubernetes_sd_configs`` use ``kubeconfig_file``, so the server can run on the host.

Caveat: Debian's ``prometheus`` package (2.42.0+ds here) is built WITHOUT Kubernetes service
discovery (NEWS.Debian, 1.5.0+ds-1: "Kubernetes support has been completely removed"); its
``prometheus`` and ``promtool`` reject ``kubernetes_sd_configs`` as an unknown field. The
output of this module needs an upstream (non-Debian) Prometheus build, whose Kubernetes SD
takes ``kubeconfig_file``. tests/chart/test_prom_monitors.py checks everything but the SD block
with Debian's promtool, and the whole config only with a promtool that has Kubernetes SD.
"""
from __future__ import annotations

import copy
import re

SUPPORTED_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
DEFAULT_INTERVAL = "30s"  # the operator's default scrapeInterval / evaluationInterval

# Fields of a monitor's spec / of one endpoint that this translation understands. Anything
# else changes what upstream generates, so it is refused rather than silently dropped.
_SPEC_FIELDS = {
    "PodMonitor": {"selector", "namespaceSelector", "podMetricsEndpoints", "jobLabel",
                   "podTargetLabels"},
    "ServiceMonitor": {"selector", "namespaceSelector", "endpoints", "jobLabel",
                       "podTargetLabels", "targetLabels"},
}
_ENDPOINT_FIELDS = {"port", "path", "interval", "scrapeTimeout", "scheme", "params",
                    "honorLabels", "honorTimestamps", "filterRunning", "followRedirects",
                    "enableHttp2", "relabelings", "metricRelabelings"}

_INVALID_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")
# Prometheus' duration syntax (model.ParseDuration), e.g. 15s, 1m30s, 500ms.
_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?"
                       r"(?:(\d+)ms)?$")
_DURATION_UNITS_MS = (365 * 86400_000, 7 * 86400_000, 86400_000, 3600_000, 60_000, 1000, 1)


def sanitize_label_name(name: str) -> str:
    """Upstream's sanitizeLabelName: every character outside [a-zA-Z0-9_] becomes '_'
    (the same rule Prometheus' Kubernetes SD applies to label names in meta labels)."""
    return _INVALID_LABEL_CHAR.sub("_", name)


def _duration_ms(text: str) -> int:
    m = _DURATION.match(text)
    if not text or not m:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(v) * unit for v, unit in zip(m.groups(), _DURATION_UNITS_MS, strict=True) if v)


def _selector_relabelings(selector: dict, role: str, where: str) -> list[dict]:
    """matchLabels and matchExpressions as keep/drop rules on the SD's meta labels.
    ``role`` is ``pod`` or ``service`` (whose labels a selector of that monitor kind matches)."""
    prefix = f"__meta_kubernetes_{role}_label_"
    present = f"__meta_kubernetes_{role}_labelpresent_"
    unknown = set(selector) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise ValueError(f"{where}: unsupported selector field(s) {sorted(unknown)}")
    rules = []
    match_labels = selector.get("matchLabels") or {}
    for key in sorted(match_labels):  # upstream sorts the keys for a stable config
        k = sanitize_label_name(key)
        rules.append({"action": "keep", "source_labels": [prefix + k, present + k],
                      "regex": f"({match_labels[key]});true"})
    for exp in selector.get("matchExpressions") or []:
        op, k = exp.get("operator"), sanitize_label_name(exp["key"])
        if op in ("In", "NotIn"):
            rules.append({"action": "keep" if op == "In" else "drop",
                          "source_labels": [prefix + k, present + k],
                          "regex": "({});true".format("|".join(exp.get("values") or []))})
        elif op in ("Exists", "DoesNotExist"):
            rules.append({"action": "keep" if op == "Exists" else "drop",
                          "source_labels": [present + k], "regex": "true"})
        else:
            raise ValueError(f"{where}: unsupported matchExpressions operator {op!r} on key "
                             f"{exp['key']!r} (supported: {', '.join(SUPPORTED_OPERATORS)})")
    return rules


def _namespaces(monitor: dict) -> list[str]:
    """getNamespacesFromNamespaceSelector (with ignoreNamespaceSelectors false):
    any -> [] (all namespaces), matchNames -> those, else the monitor's own namespace."""
    nsel = monitor["spec"].get("namespaceSelector") or {}
    unknown = set(nsel) - {"any", "matchNames"}
    if unknown:
        raise ValueError(f"{_where(monitor)}: unsupported namespaceSelector field(s) "
                         f"{sorted(unknown)}")
    if nsel.get("any"):
        return []
    return list(nsel.get("matchNames") or []) or [monitor["metadata"]["namespace"]]


def _relabel_config(rc: dict) -> dict:
    """generateRelabelConfig: a monitoring.coreos.com RelabelConfig (camelCase) as
    Prometheus' relabel_config, keys in upstream's order, action lower-cased."""
    out = {}
    if rc.get("sourceLabels"):
        out["source_labels"] = list(rc["sourceLabels"])
    if rc.get("separator") is not None:  # pointer fields upstream: kept even when ""
        out["separator"] = rc["separator"]
    if rc.get("targetLabel"):
        out["target_label"] = rc["targetLabel"]
    if rc.get("regex"):
        out["regex"] = rc["regex"]
    if rc.get("modulus"):
        out["modulus"] = rc["modulus"]
    if rc.get("replacement") is not None:
        out["replacement"] = rc["replacement"]
    if rc.get("action"):
        out["action"] = rc["action"].lower()
    return out


def _where(monitor: dict) -> str:
    meta = monitor.get("metadata") or {}
    return f"{monitor.get('kind')} {meta.get('namespace')}/{meta.get('name')}"


def _check_fields(monitor: dict) -> None:
    kind = monitor.get("kind")
    if kind not in _SPEC_FIELDS:
        raise ValueError(f"unsupported monitor kind {kind!r} "
                         f"(supported: {', '.join(sorted(_SPEC_FIELDS))})")
    if not (monitor.get("metadata") or {}).get("namespace"):
        raise ValueError(f"{_where(monitor)}: metadata.namespace is required")
    unknown = set(monitor.get("spec") or {}) - _SPEC_FIELDS[kind]
    if unknown:
        raise ValueError(f"{_where(monitor)}: unsupported spec field(s) {sorted(unknown)}")
    eps_key = "podMetricsEndpoints" if kind == "PodMonitor" else "endpoints"
    for i, ep in enumerate(monitor["spec"].get(eps_key) or []):
        unknown = set(ep) - _ENDPOINT_FIELDS
        if unknown:
            raise ValueError(f"{_where(monitor)}: unsupported field(s) {sorted(unknown)} "
                             f"in {eps_key}[{i}]")
        if not ep.get("port"):
            raise ValueError(f"{_where(monitor)}: {eps_key}[{i}] has no named 'port' "
                             "(targetPort is not supported)")


def _job_head(monitor: dict, ep: dict, i: int, role: str, kubeconfig: str,
              interval: str | None) -> dict:
    """The part of a scrape job before relabel_configs, in upstream's key order."""
    ns, name = monitor["metadata"]["namespace"], monitor["metadata"]["name"]
    prefix = "podMonitor" if monitor["kind"] == "PodMonitor" else "serviceMonitor"
    job = {"job_name": f"{prefix}/{ns}/{name}/{i}", "honor_labels": bool(ep.get("honorLabels"))}
    if "honorTimestamps" in ep:
        job["honor_timestamps"] = bool(ep["honorTimestamps"])
    sd = {"role": role, "kubeconfig_file": kubeconfig}
    namespaces = _namespaces(monitor)
    if namespaces:
        sd["namespaces"] = {"names": namespaces}
    job["kubernetes_sd_configs"] = [sd]
    scrape_interval = interval or ep.get("interval")
    if scrape_interval:
        job["scrape_interval"] = scrape_interval
    timeout = ep.get("scrapeTimeout")
    # Overriding the interval (tests scrape every 1-2 s) must not leave a timeout above it,
    # which Prometheus rejects; without one Prometheus caps the global timeout itself.
    if timeout and not (interval and _duration_ms(timeout) > _duration_ms(interval)):
        job["scrape_timeout"] = timeout
    for src, dst in (("path", "metrics_path"), ("params", "params"), ("scheme", "scheme"),
                     ("followRedirects", "follow_redirects"), ("enableHttp2", "enable_http2")):
        if ep.get(src) not in (None, ""):
            job[dst] = copy.deepcopy(ep[src])
    return job


# Fresh dicts and lists for every rule (no shared objects: callers may edit the result, and
# yaml.safe_dump would write shared lists as &anchors/*aliases).
def _init_rule() -> dict:
    """initRelabelings: keep the configured job name as a meta label."""
    return {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}


def _running_filter() -> dict:
    """generateRunningFilter: pods that finished are no targets."""
    return {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"],
            "regex": "(Failed|Succeeded)"}


def _target_label_rules(meta_prefix: str, labels: list[str]) -> list[dict]:
    return [{"source_labels": [meta_prefix + sanitize_label_name(label)],
             "target_label": sanitize_label_name(label), "regex": "(.+)", "replacement": "${1}"}
            for label in labels]


def _job_label_rule(meta_prefix: str, job_label: str | None) -> list[dict]:
    if not job_label:
        return []
    return [{"source_labels": [meta_prefix + sanitize_label_name(job_label)],
             "target_label": "job", "regex": "(.+)", "replacement": "${1}"}]


def _tail(job: dict, ep: dict, relabelings: list[dict]) -> dict:
    relabelings += [_relabel_config(rc) for rc in ep.get("relabelings") or []]
    job["relabel_configs"] = relabelings
    if ep.get("metricRelabelings"):
        job["metric_relabel_configs"] = [_relabel_config(rc) for rc in ep["metricRelabelings"]]
    return job


def _pod_monitor_job(m: dict, ep: dict, i: int, kubeconfig: str, interval: str | None) -> dict:
    """generatePodMonitorConfig for one podMetricsEndpoints[i]."""
    spec = m["spec"]
    job = _job_head(m, ep, i, "pod", kubeconfig, interval)
    rules = [_init_rule()]
    if ep.get("filterRunning", True):
        rules.append(_running_filter())
    rules += _selector_relabelings(spec.get("selector") or {}, "pod", _where(m))
    rules.append({"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                  "regex": ep["port"]})
    rules += [{"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
              {"source_labels": ["__meta_kubernetes_pod_container_name"],
               "target_label": "container"},
              {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}]
    rules += _target_label_rules("__meta_kubernetes_pod_label_", spec.get("podTargetLabels") or [])
    rules.append({"target_label": "job",
                  "replacement": f"{m['metadata']['namespace']}/{m['metadata']['name']}"})
    rules += _job_label_rule("__meta_kubernetes_pod_label_", spec.get("jobLabel"))
    rules.append({"target_label": "endpoint", "replacement": ep["port"]})
    return _tail(job, ep, rules)


def _service_monitor_job(m: dict, ep: dict, i: int, kubeconfig: str,
                         interval: str | None) -> dict:
    """generateServiceMonitorConfig for one endpoints[i], with the ``endpoints`` SD role."""
    spec = m["spec"]
    job = _job_head(m, ep, i, "endpoints", kubeconfig, interval)
    rules = [_init_rule()]
    rules += _selector_relabelings(spec.get("selector") or {}, "service", _where(m))
    rules.append({"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                  "regex": ep["port"]})
    target = ["__meta_kubernetes_endpoint_address_target_kind",
              "__meta_kubernetes_endpoint_address_target_name"]
    rules += [
        {"source_labels": list(target), "separator": ";", "regex": "Node;(.*)",
         "replacement": "${1}", "target_label": "node"},
        {"source_labels": list(target), "separator": ";", "regex": "Pod;(.*)",
         "replacement": "${1}", "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
    ]
    # Unlike for PodMonitors, upstream puts the phase filter after the target labels here.
    if ep.get("filterRunning", True):
        rules.append(_running_filter())
    rules += _target_label_rules("__meta_kubernetes_service_label_", spec.get("targetLabels") or [])
    rules += _target_label_rules("__meta_kubernetes_pod_label_", spec.get("podTargetLabels") or [])
    rules.append({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job",
                  "replacement": "${1}"})
    rules += _job_label_rule("__meta_kubernetes_service_label_", spec.get("jobLabel"))
    rules.append({"target_label": "endpoint", "replacement": ep["port"]})
    return _tail(job, ep, rules)


def scrape_configs(monitors: list[dict], kubeconfig: str,
                   interval: str | None = None) -> list[dict]:
    """One Prometheus scrape job per endpoint of every PodMonitor / ServiceMonitor given.

    ``kubeconfig``: path of the kubeconfig the Prometheus server uses for Kubernetes SD.
    ``interval``: when set, replaces every endpoint's ``interval`` (tests scrape every 1-2 s).
    Raises ValueError for another kind, an unknown selector operator or an unsupported field.
    """
    if interval is not None:
        _duration_ms(interval)
    jobs = []
    for m in monitors:
        _check_fields(m)
        if m["kind"] == "PodMonitor":
            eps, make = m["spec"].get("podMetricsEndpoints") or [], _pod_monitor_job
        else:
            eps, make = m["spec"].get("endpoints") or [], _service_monitor_job
        jobs += [make(m, ep, i, kubeconfig, interval) for i, ep in enumerate(eps)]
    return jobs


def prometheus_config(monitors: list[dict], kubeconfig: str, interval: str | None = None) -> dict:
    """A whole prometheus.yml: the ``global`` section (scrape and evaluation interval:
    ``interval``, else the operator's default 30s; no external labels) and the jobs."""
    every = interval or DEFAULT_INTERVAL
    return {"global": {"scrape_interval": every, "evaluation_interval": every},
            "scrape_configs": scrape_configs(monitors, kubeconfig, interval)}
