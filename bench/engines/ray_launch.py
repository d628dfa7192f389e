"""How a local Ray cluster's processes are started: addresses, ports, commands, environment.

Local clusters mirror a KubeRay cluster: a head node with no CPUs (it only schedules, like a
head pod started with ``num-cpus: 0``) and N worker nodes, each ``ray start`` on its own
loopback address (127.0.0.x) so that no traffic leaves loopback; Ray rewrites 127.0.0.1 to an
external interface address, other loopback addresses it keeps.
"""
from __future__ import annotations

import itertools
import os
import socket
import sys

_LOOPBACK = itertools.count(2 + 253 * (os.getpid() % 250))  # a base of its own per process


_HANDED_OUT: set[int] = set()


def free_port(ip: str = "") -> int:
    """A port free on every interface, never handed out twice by this process.

    Ray's own "find a free port" races when several nodes start at once on one host, so each
    node gets explicit ports.
    """
    while True:
        with socket.socket() as s:
            s.bind((ip, 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def port_open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


# Per process, from an offset of its own: two testbed processes on one host (two runs, or a
# test's cluster beside a run) would otherwise both hand out block 0, 1, ... and their workers
# would fight over the same ports.
_WORKER_PORT_BLOCKS = itertools.count(os.getpid() % 60)


def node_ports(temp_dir: str) -> list[str]:
    """Explicit ports and a temp dir of its own (for its unix sockets) for one node.

    Ray's defaults race when several nodes start at once on one host.
    """
    os.makedirs(temp_dir, exist_ok=True)
    # Worker ports from 20000 up: outside Ray's default worker range (10002-19999), which a
    # user's own Ray cluster on this host uses, and below Linux's ephemeral range (32768+).
    block = next(_WORKER_PORT_BLOCKS) % 60
    low = 20000 + block * 200
    return [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--min-worker-port={low}", f"--max-worker-port={low + 199}",
            f"--temp-dir={temp_dir}"]


def ray_bin() -> str:
    return os.path.join(os.path.dirname(sys.executable), "ray")


def next_loopback() -> str:
    # 127.0.X.2 .. 127.0.X.254, cycling; each process starts at its own X (its pid), so that
    # two testbed processes' nodes do not share addresses.
    n = next(_LOOPBACK)
    return f"127.0.{(n // 253) % 250}.{2 + n % 253}"


def node_env(cpus: float) -> dict[str, str]:
    """What every node process gets: no usage stats, and its BLAS pools pinned (Ray sets
    OMP_NUM_THREADS per task, not for the node processes)."""
    threads = str(max(1, int(cpus)))
    return {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
            "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "OPENBLAS_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads}


def dashboard_flags(ip: str, observe_faults: bool) -> list[str]:
    """The dashboard serves Ray's state API (task attempts, node deaths), which a faulted
    benchmark reads; other runs skip its start-up cost. KubeRay heads always run it. Its port
    is explicit either way: never the default 8265 a user's own head may hold."""
    if not observe_faults:
        return ["--include-dashboard=false", f"--dashboard-port={free_port()}"]
    return ["--include-dashboard=true", f"--dashboard-host={ip}",
            f"--dashboard-port={free_port()}"]


def head_object_store(memory_per_worker: int) -> int:
    """The driver runs on the head (as a RayJob's does), so its ray.put() lands in the head's
    object store: size it like a worker's, or large datasets spill to disk."""
    return max(78 * 2**20, min(memory_per_worker // 4, 2**30))


def head_command(ip: str, port: int, obj_store: int, temp_dir: str,
                 observe_faults: bool) -> list[str]:
    return [ray_bin(), "start", "--head", f"--node-ip-address={ip}", f"--port={port}",
            "--num-cpus=0", f"--memory={512 * 2**20}", f"--object-store-memory={obj_store}",
            *dashboard_flags(ip, observe_faults), f"--ray-client-server-port={free_port()}",
            *node_ports(temp_dir), "--block", "--disable-usage-stats"]


def worker_command(gcs_address: str, ip: str, cpus: float, memory: int, obj_store: int,
                   temp_dir: str) -> list[str]:
    return [ray_bin(), "start", f"--address={gcs_address}", f"--node-ip-address={ip}",
            f"--num-cpus={max(1, int(cpus))}", f"--memory={memory}",
            f"--object-store-memory={obj_store}", *node_ports(temp_dir), "--block",
            "--disable-usage-stats"]
