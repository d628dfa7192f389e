"""Hostile and bad input: a corpus of invalid Benchmarks and CLI specs, each rejected with a
message naming the field (engine model, CLI, operator validation, CRD schema), and property
tests (hypothesis) that the spec model never fails in any other way and that the manifests
never let user text escape its quoting."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.kube import names
from bench.spec import SpecError, parse_spec
from testbed_operator import manifests as m
from testbed_operator.crd import build_crd
from testbed_operator.validation import BenchmarkInvalid, validate_benchmark

from support.k8s_emulator import openapi_to_jsonschema

TESTBED = str(Path(sys.executable).parent / "testbed")

# YAML booleans and floats where the CRD says `type: integer` (pydantic's lax mode made them
# 1/0/2): Kubernetes refuses them, and the engine's model must too.
BAD_INTEGERS = [
    ({"workers": [True]}, "spec.workers.0"),
    ({"workers": [2.0]}, "spec.workers.0"),
    ({"repeats": False}, "spec.repeats"),
    ({"warmup": True}, "spec.warmup"),
    ({"timeoutSeconds": True}, "spec.timeoutSeconds"),
    ({"faults": {"killWorkers": True}}, "spec.faults.killWorkers"),
    ({"faults": {"seed": 1.0}}, "spec.faults.seed"),
    ({"ray": {"maxRetries": True}}, "spec.ray.maxRetries"),
    ({"ray": {"healthCheckFailureThreshold": 5.0}}, "spec.ray.healthCheckFailureThreshold"),
    ({"dask": {"allowedFailures": False}}, "spec.dask.allowedFailures"),
    ({"dataset": {"name": "digits", "scale": True}}, "spec.dataset.scale"),
    ({"dataset": {"name": "synthetic", "samples": True}}, "spec.dataset.samples"),
    ({"dataset": {"name": "synthetic", "features": 64.0}}, "spec.dataset.features"),
]

# (spec, the field the message must start with)
CORPUS = [
    ({"workers": "two"}, "spec.workers"),
    ({"workers": [-1]}, "spec.workers.0"),
    ({"workers": [0]}, "spec.workers.0"),
    ({"workers": [100000]}, "spec.workers"),
    ({"workers": []}, "spec.workers"),
    ({"workers": [1.5]}, "spec.workers.0"),
    ({"frameworks": ["ray$(id)"]}, "spec.frameworks"),
    ({"frameworks": "ray"}, "spec.frameworks"),
    ({"repeats": 10**9}, "spec.repeats"),
    ({"repeats": 0}, "spec.repeats"),
    ({"warmup": -1}, "spec.warmup"),
    ({"timeoutSeconds": 10**12}, "spec.timeoutSeconds"),
    ({"timeoutSeconds": "1h"}, "spec.timeoutSeconds"),
    ({"colour": "red"}, "spec.colour"),
    ({"workload": {"name": "knn", "params": {"n_neighbors": "5; rm -rf /"}}},
     "spec.workloads.0.params.n_neighbors"),
    ({"workload": {"name": "knn", "params": {"__class__": 1}}},
     "spec.workloads.0.params.__class__"),
    ({"workload": {"name": "`reboot`"}}, "spec.workloads.0.name"),
    ({"dataset": {"name": "synthetic", "samples": 10**8, "features": 10**5}}, "spec.dataset"),
    ({"dataset": {"name": "digits", "scale": 10**6}}, "spec.dataset.scale"),
    ({"dataset": {"name": "s3", "uri": "s3:///key"}}, "spec.dataset.uri"),
    ({"dataset": {"name": "s3", "uri": "http://evil/x"}}, "spec.dataset.uri"),
    ({"dataset": {"name": "file"}}, "spec.dataset"),
    ({"workerResources": {"memory": "lots"}}, "spec.workerResources.memory"),
    ({"workerResources": {"cpu": "-1"}}, "spec.workerResources.cpu"),
    ({"workerResources": {"cpu": "1; id"}}, "spec.workerResources.cpu"),
    ({"faults": {"killWorkers": 10**9}}, "spec.faults.killWorkers"),
    ({"faults": {"afterSeconds": -5}}, "spec.faults.afterSeconds"),
    ({"faults": {"seed": "$(id)"}}, "spec.faults.seed"),
    ({"faults": {"killHead": "rm -rf /"}}, "spec.faults.killHead"),
    ({"faults": {"detectTimeoutSeconds": 10**9}}, "spec.faults.detectTimeoutSeconds"),
    ({"ray": {"maxRetries": 10**6}}, "spec.ray.maxRetries"),
    ({"ray": {"healthCheckPeriodMs": "3s"}}, "spec.ray.healthCheckPeriodMs"),
    ({"dask": {"allowedFailures": -1}}, "spec.dask.allowedFailures"),
    ({"dask": {"nanny": "yes please"}}, "spec.dask.nanny"),
    *BAD_INTEGERS,
    # Workload parameters are strict too (params are free-form in the CRD); so are booleans.
    ({"workload": {"name": "knn", "params": {"n_neighbors": True}}},
     "spec.workloads.0.params.n_neighbors"),
    ({"workload": {"name": "tasks", "params": {"count": 10.0}}}, "spec.workloads.0.params.count"),
    ({"baselines": 1}, "spec.baselines"),
    # Dataset fields the chosen dataset never reads.
    ({"dataset": {"name": "digits", "uri": "s3://bucket/key"}}, "spec.dataset.uri"),
    ({"dataset": {"name": "digits", "samples": 5000}}, "spec.dataset.samples"),
    ({"dataset": {"name": "synthetic", "path": "/etc/passwd"}}, "spec.dataset.path"),
    ({"dataset": {"name": "file", "path": "x.csv", "endpointUrl": "http://evil"}},
     "spec.dataset.endpointUrl"),
    # Quantities beyond anything real.
    ({"workerResources": {"memory": "999999Ei"}}, "spec.workerResources.memory"),
    ({"workerResources": {"memory": "65Ti"}}, "spec.workerResources.memory"),
    ({"workerResources": {"cpu": "100000"}}, "spec.workerResources.cpu"),
    ({"workerResources": {"cpu": "0"}}, "spec.workerResources.cpu"),
]


@pytest.mark.parametrize(("spec", "field"), CORPUS,
                         ids=[f"{i}-{f}" for i, (_, f) in enumerate(CORPUS)])
def test_the_engine_rejects_each_with_the_field(spec, field):
    with pytest.raises(SpecError) as e:
        parse_spec({"frameworks": ["ray"], "workers": [1], **spec})
    assert str(e.value).startswith(field), str(e.value)


@pytest.mark.parametrize(("spec", "field"), CORPUS[::4], ids=[f for _, f in CORPUS[::4]])
def test_the_cli_rejects_each_with_exit_2_and_no_traceback(tmp_path, spec, field):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"frameworks": ["ray"], "workers": [1], **spec}))
    p = subprocess.run([TESTBED, "run", str(path), "--out", str(tmp_path / "r.jsonl")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert f"testbed: error: {path.name}.{field[len('spec.'):]}" in p.stderr or field in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "r.jsonl").exists()


def _resource(name: str, spec: dict) -> dict:
    return {"apiVersion": "testbed.dev/v1alpha1", "kind": "Benchmark",
            "metadata": {"name": name, "namespace": "bench", "uid": "u-1"}, "spec": spec}


@pytest.mark.parametrize(("spec", "field"), CORPUS,
                         ids=[f"{i}-{f}" for i, (_, f) in enumerate(CORPUS)])
def test_the_operator_and_the_crd_reject_each(spec, field):
    body = _resource("hostile", {"frameworks": ["ray"], "workers": [1], **spec})
    with pytest.raises(BenchmarkInvalid) as e:
        validate_benchmark(body)
    assert str(e.value).startswith(field), str(e.value)


CRD_SCHEMA = jsonschema.Draft4Validator(openapi_to_jsonschema(
    build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]))


def test_the_crd_schema_already_rejects_what_it_can():
    rejected = [f for s, f in CORPUS
                if list(CRD_SCHEMA.iter_errors(
                    _resource("x", {"frameworks": ["ray"], "workers": [1], **s})))]
    # Types, enums, minimums and maximums are caught at `kubectl apply` time; the rest
    # (parameters, quantities, S3 URIs, size products) by the operator, naming the field.
    assert len(rejected) >= 12, rejected
    for f in ("spec.workers", "spec.frameworks", "spec.repeats", "spec.timeoutSeconds"):
        assert f in rejected


@pytest.mark.parametrize(("spec", "field"), BAD_INTEGERS, ids=[f for _, f in BAD_INTEGERS])
def test_the_crd_and_the_model_agree_on_integers(spec, field):
    """The engine's model is as strict as the CRD's `type: integer` (no `true`, no `2.0`)."""
    body = _resource("x", {"frameworks": ["ray"], "workers": [1], **spec})
    errors = list(CRD_SCHEMA.iter_errors(body))
    assert errors and all("is not of type 'integer'" in e.message for e in errors), errors


@pytest.mark.parametrize(("body", "words"), [
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nspec: {workers: [1]}\n",
     "cm.yaml.kind: expected 'Benchmark', got 'ConfigMap'"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: 1}\n",
     "cm.yaml.kind: expected 'Benchmark', got 'Deployment'"),
    ("kind: Benchmark\nspec: {workers: [1]}\n", "cm.yaml.apiVersion: missing"),
    ("apiVersion: testbed.dev/v1alpha1\nspec: {workers: [1]}\n", "cm.yaml.kind: missing"),
    ("frameworks: [ray]\nworkers: [1]\nframeworks: [dask]\n",
     "cm.yaml: duplicate key 'frameworks' at line 3 (first at line 1)"),
    ("frameworks: [ray]\nworkers: [true]\n", "cm.yaml.workers.0: Input should be a valid integer"),
    ("frameworks: [ray]\nworkers: [1]\nrepeats: false\n",
     "cm.yaml.repeats: Input should be a valid integer"),
    ("frameworks: [ray]\nworkers: [2]\nworkerResources: {memory: 999999Ei}\n",
     "cm.yaml.workerResources.memory: memory '999999Ei' is more than the maximum of 64Ti"),
    # Within the model's cap but not on this machine: checked before anything starts.
    ("frameworks: [ray]\nworkers: [2]\nworkerResources: {memory: 60Ti}\n",
     "cm.yaml.workerResources.memory: 2 workers × 60Ti = 120Ti is more than this machine's"),
])
def test_the_cli_rejects_resources_and_yaml_it_used_to_run(tmp_path, body, words):
    path = tmp_path / "cm.yaml"
    path.write_text(body)
    p = subprocess.run([TESTBED, "run", str(path), "--out", str(tmp_path / "r.jsonl")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith(f"testbed: error: {words}") and p.stderr.count("\n") == 1, p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize(("name", "ok"), [
    ("a" * 253, True), ("my.bench.v2", True), ("a" * 254, False), ("Caps", False),
    ("a; rm -rf /", False), ("$(id)", False), ("-lead", False), ("", False)])
def test_benchmark_names_are_checked_and_long_ones_still_work(name, ok):
    body = _resource(name, {"frameworks": ["ray", "dask"], "workers": [1, 2]})
    if not ok:
        if name == "":
            body["metadata"]["name"] = ""
        with pytest.raises(BenchmarkInvalid, match=r"metadata\.name"):
            validate_benchmark(body)
        return
    spec = validate_benchmark(body)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", spec.name)
    for fw in ("ray", "dask"):
        t = names.trial_name(name, fw, 2)
        assert len(t) <= 40 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", t)
    rj = m.build_rayjob_manifest(body, spec, 2, "img")
    for value in rj["metadata"]["labels"].values():
        assert len(value) <= 63 and re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", value)


# -- property tests -------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=10), children, max_size=4)),
    max_leaves=12)
spec_keys = st.sampled_from(["frameworks", "workers", "workload", "workloads", "dataset", "repeats",
                             "warmup", "timeoutSeconds", "workerResources", "faults", "baselines",
                             "name", "nonsense"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(spec_keys, json_values, max_size=6))
def test_any_input_either_parses_or_is_a_spec_error_naming_a_field(data):
    try:
        parse_spec(data)
    except SpecError as e:
        message = str(e)
    else:
        return
    assert message.startswith("spec"), message


hostile_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1,
                       max_size=40)


@settings(max_examples=150, deadline=None)
@given(path=hostile_text, workers=st.integers(min_value=1, max_value=1024),
       framework=st.sampled_from(["ray", "dask-on-ray"]))
def test_user_text_never_escapes_the_rayjob_entrypoint(path, workers, framework):
    body = _resource("prop", {"frameworks": [framework], "workers": [workers],
                              "dataset": {"name": "file", "path": path}})
    spec = validate_benchmark(body)
    rj = m.build_rayjob_manifest(body, spec, workers, "img", framework)
    argv = shlex.split(rj["spec"]["entrypoint"])
    assert argv == m.runner_args(body, spec, framework, workers, "auto")
    again = parse_spec(json.loads(argv[argv.index("--spec-json") + 1]))
    assert again.dataset.path == path and again.workers == [workers]


@settings(max_examples=150, deadline=None)
@given(name=st.from_regex(r"[a-z0-9]([-a-z0-9]{0,60}[a-z0-9])?(\.[a-z0-9]{1,20}){0,3}",
                          fullmatch=True),
       workers=st.integers(min_value=1, max_value=1024))
def test_trial_names_and_labels_are_always_valid(name, workers):
    for fw in ("ray", "dask", "dask-on-ray"):
        t = names.trial_name(name, fw, workers)
        assert len(t) <= 40 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", t), t
        for value in m.labels(name, fw, workers).values():
            assert len(value) <= 63 and re.fullmatch(
                r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", value), value
