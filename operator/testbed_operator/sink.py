"""The result sink: a trial's records from the runner's ConfigMap, and their copy in S3.

The runner publishes its records (or its error) to the trial's ConfigMap (:mod:`.channel`);
:func:`collect` reads them, and they beat the reason the controller gave. With
``spec.resultsUri`` set, :func:`upload` copies a finished trial and its records to S3.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

from bench.kube import channel, names
from bench.record import ResultRecord, upgrade

from ._util import short
from .drivers import CONFIGMAP, TrialOutcome
from .kube import Kube


async def collect(kube: Kube, ns: str, tname: str, outcome: TrialOutcome) -> TrialOutcome:
    """Read the runner's ConfigMap; its records (and its error) beat the Job's reason."""
    cm = await kube.get(*CONFIGMAP, ns, names.result_configmap_name(tname))
    if cm is None:
        if outcome.error:
            return TrialOutcome(error=outcome.error + " (the runner published no results)")
        return TrialOutcome(error=f"the runner finished but published no results "
                                  f"(ConfigMap {names.result_configmap_name(tname)} is missing)")
    payload = channel.read_payload(cm)
    raw = payload.get("records") or []
    # Records from an older runner image are upgraded to the current shape (bench.record).
    records = [r for r in map(upgrade, raw) if r is not None]
    error = payload.get("error") if not records else None
    if len(records) < len(raw):  # kept, but said: the runner and the operator disagree
        error = (f"{len(raw) - len(records)} of the runner's {len(raw)} published records are "
                 f"not result records (no workload or framework)"
                 + (f"; {error}" if error else ""))
    if error is None and not records:
        error = outcome.error or "the runner published no result records"
    elif error and outcome.error:
        error = f"{error} ({outcome.error})"
    return TrialOutcome(records, error)


async def upload(uri: str, ns: str, name: str, trial: dict[str, Any],
                 records: list[ResultRecord]) -> dict[str, Any]:
    """Put the trial and its records to ``uri`` (s3://bucket[/prefix]); the trial fields that
    say where they went (``resultsObject``) or why they did not (``resultsUploadError``)."""
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    key = "/".join(p for p in (prefix.strip("/"), ns, name,
                               f"{trial['framework']}-{trial['workers']}.json") if p)
    doc = json.dumps({"benchmark": name, "namespace": ns, "trial": trial, "records": records},
                     default=str, sort_keys=True).encode()

    def put() -> None:
        import boto3

        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=doc,
                                      ContentType="application/json")

    try:
        await asyncio.get_running_loop().run_in_executor(None, put)
        return {"resultsObject": f"s3://{bucket}/{key}"}
    except Exception as e:  # the results are in the status anyway; say why the copy failed
        return {"resultsUploadError": f"s3://{bucket}/{key}: {short(e)}"}
