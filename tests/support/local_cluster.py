"""Start a real local Ray or Dask cluster for the fake KubeRay / Dask operator, print its
address as one JSON line, keep it up until stdin closes, then stop exactly what it started.

    python tests/support/local_cluster.py ray|dask WORKERS [MEMORY_BYTES]

A line ``add [NAME]`` on stdin adds a worker (see ``main``).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from bench.engines import make_engine
from bench.spec import RaySettings


def _ray_auth() -> dict:
    """The cluster's Ray auth, as the fake KubeRay's pods get it (RAY_AUTH_MODE and
    RAY_AUTH_TOKEN in the environment): the engine uses that mode and that token, not one of
    its own."""
    if os.environ.get("RAY_AUTH_MODE") != "token":
        return {"ray_settings": RaySettings(auth_mode="disabled")}
    token = os.environ["RAY_AUTH_TOKEN"]
    return {"ray_settings": RaySettings(auth_mode="token"), "token": token}


def _ray_node(argv: list[str]) -> dict:
    flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    node = {"ip": flags["node-ip-address"],
            "agent_port": int(flags["dashboard-agent-listen-port"])}
    if "dashboard-port" in flags:  # the head
        node["dashboard_port"] = int(flags["dashboard-port"])
        node["dashboard_host"] = flags.get("dashboard-host", node["ip"])
    return node


def _protocol_out():
    """Our stdout, kept for the JSON lines alone: fd 1 then goes to stderr, so that nothing
    Ray or Dask print in this process (a driver's warning when a node dies) lands in it."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(2, 1)
    return out


def main() -> None:
    proto = _protocol_out()
    framework, workers = sys.argv[1], int(sys.argv[2])
    memory = int(sys.argv[3]) if len(sys.argv) > 3 else 2**30
    auth = _ray_auth() if framework == "ray" else {}
    # observe_faults: a Ray head with its dashboard (state API), as every KubeRay head has.
    engine = make_engine(framework, workers, memory_per_worker=memory, startup_timeout=120,
                         observe_faults=True,
                         **({"ray_settings": auth["ray_settings"]} if auth else {}))
    if auth.get("token") and hasattr(engine, "_token_path"):
        # The engine keeps its cluster's token in a 0600 file it names RAY_AUTH_TOKEN_PATH;
        # give it KubeRay's token instead of a fresh one.
        work = engine._workdir_path("tb-ray-")
        path = os.path.join(work, "auth_token")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(auth["token"])
        engine._token_path = path
    engine.start()
    try:
        if framework == "ray":
            info = {"address": engine._gcs_address, "head_ip": engine._head_ip}
        else:
            info = {"address": engine._scheduler_address}
        # What a pod per node would stand for: the process tree its deletion kills, and the
        # name the framework knows it by (a Ray node's IP, a Dask worker's name).
        info["workers"] = [{"pid": p.pid, "name": n} for p, n in zip(
            engine.worker_processes(), engine.worker_names(), strict=False)]
        info["head_pid"] = engine._procs[0].pid
        if framework == "ray":
            # What the kubelet's probes reach on each node's pod: its IP and the ports the
            # engine gave it (bench/engines/ray_launch.py ``node_ports``).
            info["nodes"] = [_ray_node(p.args) for p in engine._procs]
        print(json.dumps(info), file=proto, flush=True)
        # Until the harness closes our stdin (or dies): each line ``add [NAME]`` starts one
        # more worker, as a controller's new pod for a deleted one (KubeRay keeps a worker
        # group's replicas; a Deployment keeps its one pod, same DASK_WORKER_NAME), and
        # answers with that worker as one JSON line.
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] != "add":
                continue
            if framework == "ray":
                name = engine.add_worker()
            else:
                name = words[1]
                engine.add_worker(name)
            proc = engine._procs[-1]
            out = {"pid": proc.pid, "name": name}
            if framework == "ray":
                out["node"] = _ray_node(proc.args)
            print(json.dumps(out), file=proto, flush=True)
    finally:
        engine.stop()


if __name__ == "__main__":
    main()
