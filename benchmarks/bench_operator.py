"""Operator performance against the Kubernetes API emulator (no cluster needed).

The operator runs as a real ``testbed-operator`` process (console script, kubeconfig login),
the emulator and the fake controllers (fast fake runner: objects ready at once, results
published directly) run in this process.  Measured:

1. apply → first trial's cluster resource created (POST seen by the emulator), one Benchmark
   on an idle operator, ``--rounds`` times;                              goal < 1 s
2. ``--benchmarks`` Benchmarks applied at once: time until all completed, every trial ran
   exactly once (harness start counts and emulator POST counts), operator peak RSS
   (psutil, sampled every 50 ms);                                         goal < 300 MB

    .venv/bin/python benchmarks/bench_operator.py [--benchmarks 50] [--rounds 5]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "operator"), ROOT]

from support.fake_controllers import FakeControllers, wait_for  # noqa: E402
from support.k8s_emulator import serve_emulator, write_kubeconfig  # noqa: E402
from support.operator_harness import Api, benchmark, free_port  # noqa: E402

NS = "bench"
BENCHMARKS = "/apis/testbed.dev/v1alpha1/namespaces/{ns}/benchmarks"


def _cluster_posts(emulator, name: str) -> list[float]:
    return [r for r in emulator.history if r.method.value == "POST" and r.resource is not None
            and r.resource.plural in ("rayjobs", "daskclusters")
            and (r.data or {}).get("metadata", {}).get("name", "").startswith(name + "-")]


async def main(n: int, rounds: int) -> int:
    async with serve_emulator(NS) as k8s:
        tmp = tempfile.mkdtemp(prefix="tb-opbench-")
        kubeconfig = str(write_kubeconfig(os.path.join(tmp, "kubeconfig"), k8s.url, NS))
        api = Api(k8s.url, NS)
        env = {**os.environ, "KUBECONFIG": kubeconfig,
               "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "operator")])}
        exe = os.path.join(os.path.dirname(sys.executable), "testbed-operator")
        metrics_port = free_port()
        with open(os.path.join(tmp, "operator.log"), "w") as log:  # the child keeps its own fd
            proc = subprocess.Popen([exe, "--namespace", NS, "--poll-seconds", "0.2",
                                     "--metrics-port", str(metrics_port),
                                     "--liveness", f"http://127.0.0.1:{free_port()}/healthz"],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
        ps = psutil.Process(proc.pid)
        peak = 0

        async def sample() -> None:
            nonlocal peak
            while True:
                try:
                    peak = max(peak, ps.memory_info().rss)
                except psutil.Error:
                    return
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        try:
            async with FakeControllers(k8s.url, NS, kubeconfig, fast=True) as fake:
                # Warm-up: the operator has started and reconciled one Benchmark.
                await api.apply(benchmark("warm", frameworks=["ray"], workers=[1]))
                await _done(api, ["warm"], 60)
                idle_rss = ps.memory_info().rss
                latencies = []
                for i in range(rounds):
                    name = f"lat{i}"
                    t0 = time.perf_counter()
                    await api.apply(benchmark(name, frameworks=["dask"], workers=[1]))
                    await wait_for(lambda name=name: _cluster_posts(k8s.emulator, name), 10,
                                   f"{name}'s cluster resource", poll=0.002)
                    latencies.append(time.perf_counter() - t0)
                    await _done(api, [name], 30)
                names = [f"many{i:02d}" for i in range(n)]
                seen_done: dict[tuple[str, str, int], float] = {}
                planned_at: dict[str, float] = {}
                watcher = asyncio.create_task(_watch_trials(k8s.url, seen_done, planned_at))
                applied_at: dict[str, float] = {}
                t0 = time.perf_counter()
                async def apply(nm: str) -> None:
                    applied_at[nm] = time.monotonic()
                    await api.apply(benchmark(nm, frameworks=["ray", "dask"], workers=[1, 2],
                                              workload={"name": "knn"}))
                await asyncio.gather(*(apply(nm) for nm in names))
                objs = await _done(api, names, 600)
                elapsed = time.perf_counter() - t0
                phases = [o["status"]["phase"] for o in objs]
                twice = {k: v for k, v in fake.starts.items() if v != 1}
                posts = {}
                for r in k8s.emulator.history:
                    if (r.method.value == "POST" and r.resource is not None
                            and r.resource.plural in ("rayjobs", "daskclusters", "jobs")):
                        key = (r.resource.plural, (r.data or {}).get("metadata", {}).get("name"))
                        posts[key] = posts.get(key, 0) + 1
                reposted = {k: v for k, v in posts.items() if v != 1}
                trials = sum(len(o["status"]["trials"]) for o in objs)
                watcher.cancel()
                # Reconcile latency: a runner's end reported by the fake controller -> the trial
                # shown done in the Benchmark's status (watched); apply -> trials planned.
                react = []
                for (nm, fw, w), seen in seen_done.items():
                    if nm not in applied_at:
                        continue  # finished before this phase (warm-up, latency rounds)
                    kind = "RayJob" if fw == "ray" else "Job"
                    child = f"{kind}/{nm}-{fw}-{w}" + ("-runner" if kind == "Job" else "")
                    if child in fake.finished_at:
                        react.append(seen - fake.finished_at[child])
                plan = [planned_at[nm] - applied_at[nm] for nm in names if nm in planned_at]
        finally:
            sampler.cancel()
            proc.terminate()
            await asyncio.to_thread(proc.wait, 30)
            await api.close()
    print(f"apply -> first cluster resource (n={rounds}): median "
          f"{statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms   [goal < 1000 ms]")
    print(f"{n} Benchmarks x 4 trials applied at once: {phases.count('Succeeded')}/{n} Succeeded, "
          f"{trials} trials in {elapsed:.1f} s ({trials / elapsed:.1f} trials/s)")
    print(f"trials started twice (harness): {len(twice)}; objects created twice (API): "
          f"{len(reposted)}")
    print(f"reconcile latency, runner done -> trial done in status (n={len(react)}): "
          f"p50 {_pct(react, 50) * 1000:.0f} ms, p95 {_pct(react, 95) * 1000:.0f} ms, "
          f"max {max(react) * 1000:.0f} ms   [goal p95 < 1000 ms]")
    print(f"reconcile latency, apply -> trials planned in status (n={len(plan)}): "
          f"p50 {_pct(plan, 50) * 1000:.0f} ms, p95 {_pct(plan, 95) * 1000:.0f} ms"
          "   [goal p95 < 1000 ms]")
    print(f"operator RSS: idle after warm-up {idle_rss / 2**20:.0f} MB, peak {peak / 2**20:.0f} MB"
          f"   [goal < 300 MB]")
    ok = (max(latencies) < 1 and phases.count("Succeeded") == n and not twice and not reposted
          and peak < 300 * 2**20 and len(react) == 4 * n and _pct(react, 95) < 1
          and _pct(plan, 95) < 1)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def _pct(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def _watch_trials(url: str, seen_done: dict, planned_at: dict) -> None:
    """Watch Benchmarks like `kubectl get -w`; note when each trial first shows as done."""
    import json

    import aiohttp

    async with aiohttp.ClientSession(url) as session:
        rv = None
        while True:
            params = {"watch": "true", "timeoutSeconds": "60",
                      **({"resourceVersion": rv} if rv else {})}
            async with session.get(BENCHMARKS.format(ns=NS), params=params,
                                   timeout=aiohttp.ClientTimeout(total=None)) as r:
                async for line in r.content:
                    if not line.strip():
                        continue
                    obj = json.loads(line)["object"]
                    rv = obj["metadata"]["resourceVersion"]
                    now = time.monotonic()
                    st = obj.get("status") or {}
                    if st.get("trials"):
                        planned_at.setdefault(obj["metadata"]["name"], now)
                    for t in st.get("trials") or []:
                        if t["state"] in ("Succeeded", "Failed"):
                            seen_done.setdefault((obj["metadata"]["name"], t["framework"],
                                                  t["workers"]), now)


async def _done(api: Api, names: list[str], timeout: float) -> list[dict]:
    wanted = set(names)

    async def check():  # one LIST per poll, like `kubectl get bm`
        objs = [o for o in await api.items(BENCHMARKS) if o["metadata"]["name"] in wanted]
        if len(objs) == len(wanted) and all(
                (o.get("status") or {}).get("phase") in ("Succeeded", "Failed") for o in objs):
            return objs
        return None
    return await wait_for(check, timeout, f"{len(names)} Benchmark(s) to finish", poll=1.0)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmarks", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    sys.exit(asyncio.run(main(a.benchmarks, a.rounds)))
