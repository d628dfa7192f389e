"""Tier 4: the container images, built and run on a real Docker engine.

The images are built once per session (tests/support/image_build.py; shared with
tests/cluster/test_real_cluster.py) on the debootstrap base ``testbed-base:bookworm``
(scripts/provision-docker.sh makes it; no registry needed): the slim runner, the full runner
on its layers (PyPI's torch with its nvidia-* wheels) and the operator, tagged
``testbed-runner:test-slim``, ``testbed-runner:test`` and ``testbed-operator:test``
(``$TESTBED_TEST_IMAGE_TAG`` replaces ``test``). The containers below run the slim runner (no
torch: they run KNN on digits); the full one is checked for its layers and for torch training
on the CPU (the cluster tier runs it). tests/images/test_image_locks.py checks that every lock
is closed and is what the tested .venv runs. Every container runs with ``--network=host`` and
talks to loopback addresses only:

* a Ray cluster (head + 2 workers, each node on its own 127.0.9.x, explicit ports, token auth
  with one shared token) and the runner as the driver on the head's "pod": it shares the
  head's process and IPC namespaces and its Ray temp dir, as a container in the head pod would
  (a Ray driver finds its local raylet through ``ps`` and unix sockets);
* a Dask cluster (scheduler + 2 workers) and the runner connecting over TCP;
* the operator container (read-only root filesystem, no capabilities, as the chart runs it)
  against the Kubernetes API emulator served by this test's event loop, with the fake
  KubeRay/Dask/kubelet controllers; it must reconcile a Benchmark to Succeeded.

Skipped with the reason where no Docker engine answers; CI provisions one (.ci/run runs
scripts/provision-docker.sh).
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest

import support
from support.image_build import FULL, OPERATOR, SLIM, VARIANT, engine_problem

NS = "ns1"
KNN = json.dumps({"workload": {"name": "knn"}, "repeats": 2, "warmup": 0})


_PROBLEM = engine_problem()
pytestmark = [
    pytest.mark.skipif(_PROBLEM is not None,
                       reason=f"no Docker engine ({_PROBLEM}); scripts/provision-docker.sh "
                              "installs Debian's docker.io and starts dockerd (CI runs it)"),
    pytest.mark.slow,
    pytest.mark.timeout(1800),  # the first test also builds the images (minutes, cold)
]


# ------------------------------------------------------------------------------- helpers
def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... exited {p.returncode}:\n"
                             f"{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p


def free_port() -> int:
    """A port free on every interface (containers share the host's network), never reused here."""
    return support.free_port("")


def wait_port(ip: str, port: int, timeout: float, container: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((ip, port)) == 0:
                return
        if docker("inspect", "-f", "{{.State.Running}}", container).stdout.strip() != "true":
            break
        time.sleep(0.5)
    raise AssertionError(f"{container} does not listen on {ip}:{port}:\n{logs(container)}")


def logs(container: str) -> str:
    p = docker("logs", "--tail", "40", container, check=False)
    return (p.stdout + p.stderr)[-4000:]


class Containers:
    """Uniquely named containers, all removed (``docker rm -f``) on exit."""

    def __init__(self) -> None:
        self.prefix = f"tb-test-{uuid.uuid4().hex[:8]}"
        self.names: list[str] = []

    def name(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        self.names.append(name)
        return name

    def run_detached(self, role: str, image: str, *args: str, opts: tuple[str, ...] = ()) -> str:
        name = self.name(role)
        docker("run", "-d", "--name", name, "--network=host", *opts, image, *args)
        return name

    def remove_all(self) -> None:
        if self.names:
            docker("rm", "-f", *self.names, check=False, timeout=120)


@contextlib.contextmanager
def containers():
    c = Containers()
    try:
        yield c
    finally:
        c.remove_all()


def runner_records(p: subprocess.CompletedProcess) -> list[dict]:
    assert p.returncode == 0, f"runner exited {p.returncode}:\n{p.stderr[-4000:]}"
    doc = json.loads(p.stdout.strip().splitlines()[-1])
    return doc["records"]


def assert_knn_succeeded(records: list[dict], framework: str) -> None:
    (rec,) = records
    assert rec["state"] == "succeeded", rec["error"]
    assert (rec["framework"], rec["workers"], rec["workload"]) == (framework, 2, "knn")
    assert rec["quality"]["accuracy"] > 0.9, rec["quality"]
    assert len(rec["seconds"]) == 2 and all(s > 0 for s in rec["seconds"])
    assert rec["environment"]["engine"]["started_cluster"] is False
    assert len(rec["resources"]["workers"]) == 2  # sampled inside both worker containers


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def images(built_images) -> dict[str, float]:
    """The runners and the operator on the debootstrap base (the session's build, see
    tests/support/image_build.py); returns the build's seconds."""
    return built_images


# ------------------------------------------------------------------------------- tests
def test_image_sizes(images, record_property):
    sizes = {img: int(docker("image", "inspect", "-f", "{{.Size}}", img).stdout)
             for img in (SLIM, OPERATOR)}
    for img, size in sizes.items():
        record_property(f"{img} bytes", size)
        print(f"{img}: {size / 1e6:.0f} MB (built in {images['build_seconds']:.0f} s)")
    # Ray, pyarrow, scikit-learn, scipy... on a 155 MB base: about 1.28 GB. The operator has
    # none of those: about 0.37 GB.
    assert 0.8e9 < sizes[SLIM] < 2.0e9, sizes
    assert sizes[OPERATOR] < 0.6e9, sizes
    heavy = "('ray', 'torch', 'triton', 'dask', 'sklearn', 'pandas', 'distributed')"
    find = f"import importlib.util as u; print([m for m in {heavy} if u.find_spec(m)])"
    p = docker("run", "--rm", "--network=host", "--entrypoint", "python", OPERATOR, "-c", find)
    assert p.stdout.strip() == "[]", p.stdout
    p = docker("run", "--rm", "--network=host", SLIM, "python", "-c", find)
    assert p.stdout.strip() == "['ray', 'dask', 'sklearn', 'pandas', 'distributed']", p.stdout
    p = docker("run", "--rm", "--network=host", SLIM, "sh", "-c",
               "ls /opt/venv/lib/python3.11/site-packages"
               " | grep -ciE '^(nvidia|triton|torch)' || true")
    assert p.stdout.strip() == "0", p.stdout
    label = docker("image", "inspect", "-f",
                   '{{index .Config.Labels "org.raydask-testbed.variant"}}',
                   SLIM).stdout.strip()
    assert label == "slim"


@pytest.mark.parametrize("image", [SLIM, OPERATOR])
def test_the_testbed_is_a_small_layer_on_top_of_its_packages(images, image):
    """A change to the testbed's code rebuilds one small layer, not the packages' (the
    Dockerfiles install it apart and copy it last): the top layer holds the testbed alone, the
    one below it every pinned package."""
    p = docker("history", "--human=false", "--format", "{{.Size}}\t{{.CreatedBy}}", image)
    layers = [(int(size), created) for size, created in
              (line.split("\t", 1) for line in p.stdout.splitlines()) if int(size) > 0]
    (top, top_by), (packages, packages_by) = layers[:2]
    assert "COPY" in top_by and top < 10e6, layers[:3]
    assert "COPY" in packages_by and packages > 150e6, layers[:3]
    p = docker("run", "--rm", "--network=host", "--entrypoint", "python", image, "-c",
               "import bench, importlib.metadata as m; print(bench.__file__, "
               "m.version('raydask-testbed'))")
    assert p.stdout.split() == ["/opt/venv/lib/python3.11/site-packages/bench/__init__.py",
                                importlib.metadata.version("raydask-testbed")], p.stdout


def test_the_full_runner_is_the_slim_ones_packages_plus_torch(images):
    """The full runner shares the slim one's layers up to its packages, then adds torch's and
    the testbed's: two layers, and torch imports and trains on the CPU there."""
    if VARIANT != "full":
        pytest.skip("this session built only the slim runner (TESTBED_TEST_RUNNER_VARIANT=slim)")
    layers = {img: json.loads(docker("image", "inspect", "-f", "{{json .RootFS.Layers}}",
                                     img).stdout) for img in (SLIM, FULL)}
    assert layers[FULL][:-2] == layers[SLIM][:-1], layers
    label = docker("image", "inspect", "-f",
                   '{{index .Config.Labels "org.raydask-testbed.variant"}}', FULL).stdout.strip()
    assert label == "full"
    p = docker("run", "--rm", "--network=host", FULL, "python", "-c",
               "import torch; torch.manual_seed(0); m = torch.nn.Linear(4, 1); "
               "x = torch.randn(64, 4); y = x.sum(1, keepdim=True); "
               "o = torch.optim.SGD(m.parameters(), lr=0.1); "
               "[(o.zero_grad(), torch.nn.functional.mse_loss(m(x), y).backward(), o.step()) "
               "for _ in range(200)]; "
               "print(torch.__version__, torch.cuda.is_available(), "
               "round(torch.nn.functional.mse_loss(m(x), y).item(), 4), "
               "torch.distributed.is_gloo_available())", timeout=300)
    version, cuda, loss, gloo = p.stdout.split()
    assert (version, cuda, gloo) == ("2.13.0+cu130", "False", "True"), p.stdout
    assert float(loss) < 1e-3, p.stdout


@pytest.mark.parametrize("image", [SLIM, OPERATOR])
def test_non_root_no_build_tools(images, image):
    script = ("id -u; id -g; test -w \"$HOME\" && echo home-writable; "
              "for t in gcc cc c++ make pip pip3; do command -v $t; done; "
              "ls /opt/venv/bin/pip* 2>/dev/null; ls /wheels /opt/pip 2>/dev/null; "
              "python -c 'import sys; print(sys.prefix)'")
    p = docker("run", "--rm", "--network=host", "--entrypoint", "sh", image, "-c", script,
               check=False)
    assert p.stdout.split() == ["1000", "1000", "home-writable", "/opt/venv"], p.stdout + p.stderr


def test_entry_points(images):
    p = docker("run", "--rm", "--network=host", SLIM)  # default CMD: testbed --help
    assert "runner" in p.stdout and "usage: testbed" in p.stdout, p.stdout
    for tool in ("ray", "dask"):
        docker("run", "--rm", "--network=host", SLIM, tool, "--help")
    p = docker("run", "--rm", "--network=host", OPERATOR, "--help")  # ENTRYPOINT testbed-operator
    assert "--max-concurrent-trials" in p.stdout, p.stdout


_WORKER_PORT_BLOCKS = iter(range(10200, 19800, 200))


def _ray_node_ports() -> list[str]:
    # Worker ports: a block of its own per node, below the kernel's ephemeral range (32768+)
    # and apart from the blocks local engines use (20000-31999).
    low = next(_WORKER_PORT_BLOCKS)
    return [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--min-worker-port={low}", f"--max-worker-port={low + 199}"]


def test_ray_cluster_and_runner_in_containers(images, tmp_path):
    head_ip, port = "127.0.9.2", free_port()
    gcs = f"{head_ip}:{port}"
    token = uuid.uuid4().hex  # what KubeRay puts in a Secret: every node and the driver use it
    auth = ("-e", "RAY_AUTH_MODE=token", "-e", f"RAY_AUTH_TOKEN={token}")
    shared = tmp_path / "ray"  # the head's Ray temp dir, shared with the driver (one "pod")
    shared.mkdir()
    os.chown(shared, 1000, 1000)
    common = ["--disable-usage-stats", "--temp-dir=/tmp/ray", "--object-store-memory=100000000",
              "--block"]
    agents = {}  # node IP -> its dashboard agent's HTTP port (KubeRay's probes ask there)
    with containers() as c:
        ports = _ray_node_ports()
        agents[head_ip] = _agent_port(ports)
        head = c.run_detached(
            "ray-head", SLIM, "ray", "start", "--head", f"--node-ip-address={head_ip}",
            f"--port={port}", "--num-cpus=0", f"--memory={512 * 2**20}",
            "--include-dashboard=false", *ports, *common,
            opts=("--ipc=shareable", "--shm-size=256m", "-v", f"{shared}:/tmp/ray", *auth))
        wait_port(head_ip, port, 120, head)
        workers = []
        for i, ip in enumerate(("127.0.9.3", "127.0.9.4")):
            ports = _ray_node_ports()
            agents[ip] = _agent_port(ports)
            workers.append(c.run_detached(
                f"ray-worker{i}", SLIM, "ray", "start", f"--address={gcs}",
                f"--node-ip-address={ip}", "--num-cpus=1", f"--memory={2**30}", *ports, *common,
                opts=("--shm-size=256m", *auth)))
        _kuberay_probes_pass(agents, head, workers)
        run_runner(c, "ray", gcs, f"--pid=container:{head}", f"--ipc=container:{head}",
                   "-v", f"{shared}:/tmp/ray", "-e", f"TESTBED_NODE_IP={head_ip}", *auth)


def _agent_port(ports: list[str]) -> int:
    return int(next(p for p in ports if p.startswith("--dashboard-agent-listen-port="))
               .split("=")[1])


def _kuberay_probes_pass(agents: dict[str, int], head: str, workers: list[str]) -> None:
    """The probes KubeRay puts on every Ray pod pass against the runner image's nodes.

    KubeRay (ray-operator/controllers/ray/common/pod.go, initLivenessAndReadinessProbe; ports in
    utils/constant.go): with rayVersion >= 2.53, which the operator sets, an HTTP probe
    ``GET /api/healthz`` on the dashboard agent's port (52365 in a pod; here each node's own
    explicit port, all containers sharing the host's network), run by the kubelet. Without
    rayVersion it injects exec probes running ``wget`` inside the container, which this image
    does not have: those would never pass, and no Ray pod would ever become Ready.
    """
    for ip, agent in agents.items():
        url = f"http://{ip}:{agent}/api/healthz"
        deadline = time.monotonic() + 60
        while True:  # the agent starts a little after the node's GCS/raylet ports open
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    body = r.read().decode()
                    assert r.status == 200 and "success" in body, (url, r.status, body)
                    break
            except OSError:
                assert time.monotonic() < deadline, f"KubeRay's HTTP probe {url} never passed"
                time.sleep(0.5)
    legacy = ("wget --tries 1 -T 2 -q -O- http://localhost:52365/api/local_raylet_healthz "
              "| grep success")
    for container in (head, *workers):
        p = docker("exec", container, "bash", "-c", legacy, check=False)
        assert p.returncode != 0 and "wget" in (p.stdout + p.stderr), (p.stdout, p.stderr)


def run_runner(c, framework: str, address: str, *opts: str) -> None:
    """The runner container against a containerized cluster: KNN on digits must succeed."""
    t0 = time.monotonic()
    p = docker("run", "--rm", "--name", c.name(f"{framework}-runner"), "--network=host", *opts,
               SLIM, "testbed", "runner", "--framework", framework, "--workers", "2",
               "--address", address, "--spec-json", KNN, timeout=600, check=False)
    print(f"{framework} runner container: {time.monotonic() - t0:.1f} s")
    try:
        assert_knn_succeeded(runner_records(p), framework)
    except AssertionError:
        print("\n".join(f"--- {n}\n{logs(n)}" for n in c.names[:-1]))
        raise


def test_dask_cluster_and_runner_in_containers(images):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    with containers() as c:
        scheduler = c.run_detached("dask-scheduler", SLIM, "dask", "scheduler", "--host",
                                   "127.0.0.1", "--port", str(port), "--dashboard-address",
                                   f"127.0.0.1:{free_port()}")
        wait_port("127.0.0.1", port, 60, scheduler)
        for i in range(2):
            c.run_detached(f"dask-worker{i}", SLIM, "dask", "worker", address, "--nthreads", "1",
                           "--host", "127.0.0.1", "--name", f"w{i}", "--memory-limit", "1GiB",
                           "--dashboard-address", "127.0.0.1:0", "--local-directory", "/tmp/dask")
        run_runner(c, "dask", address)


async def test_operator_container_reconciles_a_benchmark(images, tmp_path):
    from support.fake_controllers import FakeControllers
    from support.k8s_emulator import serve_emulator, write_kubeconfig
    from support.operator_harness import Api, benchmark, finished

    kube = tmp_path / "kube"
    kube.mkdir()
    kube.chmod(0o755)
    c = Containers()
    # Blocking docker calls run in threads: the emulator serves on this event loop.
    async with serve_emulator(NS) as k8s:
        write_kubeconfig(kube / "config", k8s.url, NS).chmod(0o644)
        metrics, health = free_port(), free_port()
        api = Api(k8s.url, NS)
        operator = c.name("operator")
        try:
            await asyncio.to_thread(
                docker, "run", "-d", "--name", operator, "--network=host",
                "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges", "-v", f"{kube}:/kube:ro",
                "-e", "KUBECONFIG=/kube/config", "-e", f"TESTBED_NAMESPACES={NS}",
                "-e", "TESTBED_POLL_SECONDS=0.2", "-e", f"TESTBED_METRICS_PORT={metrics}",
                "-e", f"TESTBED_LIVENESS=http://127.0.0.1:{health}/healthz", OPERATOR)
            async with FakeControllers(k8s.url, NS, str(kube / "config"), fast=True):
                await api.apply(benchmark("img", frameworks=["ray", "dask"], workers=[1, 2]))
                obj = await finished(api, "img", 120)
            assert obj["status"]["phase"] == "Succeeded", obj["status"]
            assert [t["state"] for t in obj["status"]["trials"]] == ["Succeeded"] * 4

            def scrape(url: str) -> str:
                with urllib.request.urlopen(url, timeout=10) as r:
                    return r.read().decode()

            text = await asyncio.to_thread(scrape, f"http://127.0.0.1:{metrics}/metrics")
            assert 'testbed_trials{benchmark="img",namespace="ns1",state="Succeeded"} 4.0' in text
            await asyncio.to_thread(scrape, f"http://127.0.0.1:{health}/healthz")
            # SIGTERM (docker stop): the operator exits cleanly.
            await asyncio.to_thread(docker, "stop", "-t", "60", operator, timeout=120)
            code = (await asyncio.to_thread(docker, "inspect", "-f", "{{.State.ExitCode}}",
                                            operator)).stdout.strip()
            assert code == "0", await asyncio.to_thread(logs, operator)
        except BaseException:
            print(await asyncio.to_thread(logs, operator))
            raise
        finally:
            await api.close()
            await asyncio.to_thread(c.remove_all)
