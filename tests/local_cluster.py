"""Start a real local Ray or Dask cluster for the fake KubeRay / Dask operator, print its
address as one JSON line, keep it up until stdin closes, then stop exactly what it started.

    python tests/local_cluster.py ray|dask WORKERS [MEMORY_BYTES]
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.engines import make_engine  # noqa: E402


def main() -> None:
    framework, workers = sys.argv[1], int(sys.argv[2])
    memory = int(sys.argv[3]) if len(sys.argv) > 3 else 2**30
    # observe_faults: a Ray head with its dashboard (state API), as every KubeRay head has.
    engine = make_engine(framework, workers, memory_per_worker=memory, startup_timeout=120,
                         observe_faults=True)
    engine.start()
    try:
        if framework == "ray":
            info = {"address": engine._gcs_address, "head_ip": engine._head_ip}
        else:
            info = {"address": engine._scheduler_address}
        # What a pod per node would stand for: the process tree its deletion kills, and the
        # name the framework knows it by (a Ray node's IP, a Dask worker's name).
        info["workers"] = [{"pid": p.pid, "name": n}
                           for p, n in zip(engine.worker_processes(), engine.worker_names())]
        info["head_pid"] = engine._procs[0].pid
        print(json.dumps(info), flush=True)
        sys.stdin.read()  # until the harness closes our stdin (or dies)
    finally:
        engine.stop()


if __name__ == "__main__":
    main()
