"""What Ray did, read from Ray itself: per-node resource samplers (a zero-CPU actor pinned to
each node) and the fault watch (task attempts and node deaths from Ray's state API)."""
from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from typing import Any

import psutil

from bench.errors import RunError, error_summary
from bench.measure import CgroupMemory, TreeSampler, summarize_samples

from .base import FaultWatch, _replacement, wait_until


class NodeSampler:
    """A zero-CPU actor pinned to one node: samples the node's raylet and everything under it."""

    def __init__(self, node_id: str):
        self.node_id = node_id
        self._sampler: TreeSampler | None = None

    def ping(self) -> int:
        return os.getpid()

    def start(self, interval: float) -> None:
        raylet = psutil.Process(os.getpid()).parent()
        self._sampler = TreeSampler(raylet.pid if raylet else os.getpid(), interval,
                                    cgroup=CgroupMemory.of_worker_container())
        self._sampler.start()

    def stop(self) -> dict[str, Any]:
        out = self._sampler.stop() if self._sampler else summarize_samples([], [])
        self._sampler = None
        out["id"] = self.node_id[:12]
        out["node"] = self.node_id
        return out


def start_samplers(nodes: list[str]) -> list[Any]:
    """One :class:`NodeSampler` actor on each of ``nodes`` (Ray node IDs), started."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    sampler: Any = ray.remote(num_cpus=0, max_restarts=0)(NodeSampler)  # an actor class
    samplers = [sampler.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(node)
        for node in nodes]
    ray.get([s.ping.remote() for s in samplers])
    return samplers


def ray_nodes() -> list[dict[str, Any]]:
    """``ray_nodes()``: every node the GCS knows, alive or dead."""
    import ray

    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]  # unannotated
    return nodes


_DIED = ("NODE_DIED", "WORKER_DIED", "OUT_OF_MEMORY", "LOCAL_RAYLET_DIED")
_UNFINISHED = ("RUNNING", "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER")


def _since(times: list[float], t_kill: float | None) -> float | None:
    return min(times) - t_kill if times and t_kill is not None else None


class RayFaultWatch(FaultWatch):
    """Reads Ray's own records through the state API: task attempts (a retry is an attempt
    number above 0; a failed attempt carries the error type, e.g. ``NODE_DIED``) and node
    deaths (with the GCS's end time)."""

    def __init__(self, replacer: str | None = None) -> None:
        import ray

        self.replacer = replacer  # see Engine.replacer
        # The nodes before the run: a replacement is an alive node not among them.
        self.nodes_before = {n["NodeID"] for n in ray_nodes()}
        self.job_id = ray.get_runtime_context().get_job_id()
        # The state API's own address lookup (address=None) scans the host for GCS processes
        # and gives up when it finds more than one (ray/_private/services.py): any other Ray
        # cluster on the machine, a user's own included. Name ours.
        self.address = ray.get_runtime_context().gcs_address
        # The faulted run's tasks are those created from now on, by this driver (the owner
        # stamps creation_time_ms with this clock). A snapshot of earlier tasks would not do:
        # task events reach the state API about a second late.
        self.since_ms = time.time() * 1000

    def _tasks(self) -> list[Any]:
        from ray.util.state import list_tasks

        # Normal tasks only: the workload's. (Actor calls, such as the samplers' stop() just
        # before the faulted run, reach the state API up to a second late.)
        return [t for t in list_tasks(address=self.address,
                                      filters=[("job_id", "=", self.job_id)], limit=10_000,
                                      detail=True, raise_on_missing_output=False, timeout=30)
                if str(t.type) == "NORMAL_TASK"]

    def _await_deaths_and_arrivals(self, killed: set[str], timeout: float) -> None:
        """The GCS marks a node dead after its missed health checks; wait for that, and for
        the replacements when something replaces nodes (both bounded: what is missing then is
        reported as undetected, or as fewer arrivals)."""

        with contextlib.suppress(RunError):
            wait_until(lambda: killed <= {n["NodeManagerAddress"] for n in ray_nodes()
                                          if not n["Alive"]}, timeout, "the killed nodes' deaths",
                       poll=0.2)
        if self.replacer is None or not killed:
            return

        # KubeRay makes a new pod for each deleted worker pod; its node registers anew (a new
        # node ID, usually a new IP). Wait for as many as were killed.
        def arrived() -> bool:
            new = [n for n in ray_nodes() if n["Alive"] and n["NodeID"] not in self.nodes_before]
            return len(new) >= len(killed)

        with contextlib.suppress(RunError):
            wait_until(arrived, timeout, "the replacement nodes", poll=0.5)

    def _settled_tasks(self) -> list[Any]:
        """This run's task attempts. Task events reach the state API about once a second:
        read until two reads agree and nothing is still running (at most about 15 s)."""
        rows: list[Any] = []
        prev = None
        settle = time.monotonic() + 15
        while time.monotonic() < settle:
            rows = [t for t in self._tasks() if (t.creation_time_ms or 0) >= self.since_ms]
            sig = sorted((t.task_id, t.attempt_number, str(t.state)) for t in rows)
            if sig == prev and not any(str(t.state) in _UNFINISHED for t in rows):
                break
            prev = sig
            time.sleep(1.2)
        return rows

    def report(self, kills: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
        from ray.util.state import list_nodes

        if any(k["role"] == "head" and "at_wall" in k for k in kills):
            return {"observed": False, "reason": "the head was killed: Ray's state API (GCS "
                                                 "and dashboard) went with it"}
        killed = {k["name"] for k in kills if k["role"] == "worker" and "at_wall" in k}
        t_kill = min((k["at_wall"] for k in kills if "at_wall" in k), default=None)
        self._await_deaths_and_arrivals(killed, timeout)
        listed = list_nodes(address=self.address, detail=True, limit=10_000,
                            raise_on_missing_output=False)
        nodes = [n for n in listed if n.node_ip in killed]
        arrivals = [n.start_time_ms / 1000 for n in listed
                    if n.node_id not in self.nodes_before and str(n.state) == "ALIVE"
                    and n.start_time_ms
                    and (t_kill is None or n.start_time_ms / 1000 >= t_kill - 1)]
        try:
            rows = self._settled_tasks()
        except Exception as e:
            return {"observed": False, "reason": f"Ray's state API is unavailable: "
                                                 f"{error_summary(e)}"}
        failed = [t for t in rows if str(t.state) == "FAILED"]
        died = [t for t in failed if str(t.error_type) in _DIED]
        out: dict[str, Any] = {
            "observed": True,
            "workers_removed": sum(1 for n in nodes if str(n.state) == "DEAD"),
            # The first failure Ray reported for a task on a killed node or worker...
            "detected_after_seconds": _since(
                [t.end_time_ms / 1000 for t in died if t.end_time_ms], t_kill),
            # ...and the GCS marking the node dead (health checks).
            "node_dead_after_seconds": _since(
                [n.end_time_ms / 1000 for n in nodes if n.end_time_ms], t_kill),
            "task_attempts": len(rows),
            "retried_tasks": sum(1 for t in rows if t.attempt_number > 0),
            "failed_attempts": len(failed),
            "failed_by_error": dict(Counter(str(t.error_type) for t in failed)),
            "replaced_after_seconds": _since(arrivals, t_kill),
            "replacement": _replacement(self.replacer, len(killed), sorted(arrivals)[:len(killed)],
                                        t_kill),
        }
        undetected = killed - {n.node_ip for n in nodes if str(n.state) == "DEAD"}
        if undetected:
            out["undetected"] = sorted(undetected)
        return out
