"""The measurement's own rules: the busy rule, timeline merging, the cluster figures, and the
sampler and the machine watch on this very process (no cluster needed)."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import psutil
import pytest

from bench.measure import (
    BUSY_OTHER_CPU,
    BUSY_STEAL,
    MachineWatch,
    TreeSampler,
    busy_rule,
    combine_workers,
    downsample,
    tree_unique,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The repository root: the subprocesses below import bench from it."""


@pytest.mark.parametrize(("other", "steal", "busy", "reason"), [
    (0.0, 0.0, False, None),
    (None, None, False, None),
    (BUSY_OTHER_CPU, BUSY_STEAL, False, None),  # at the thresholds: not busy
    (50.1, 0.0, True, "other processes used 50% of a core (> 50%)"),
    (180.0, None, True, "other processes used 180% of a core (> 50%)"),
    (None, 5.5, True, "steal 5.5% (> 5%)"),
    (75.0, 12.0, True, "other processes used 75% of a core (> 50%); steal 12.0% (> 5%)"),
])
def test_busy_rule(other, steal, busy, reason):
    assert busy_rule(other, steal) == (busy, reason)


def test_downsample_keeps_the_memory_peak_and_averages_the_rest():
    points = [[float(i), float(i % 2) * 100, 1000 + i] for i in range(10)]
    assert downsample(points, 10) == points
    assert downsample(points, 5) == [[0.5, 50.0, 1001], [2.5, 50.0, 1003], [4.5, 50.0, 1005],
                                     [6.5, 50.0, 1007], [8.5, 50.0, 1009]]
    assert len(downsample(points * 100, 200)) <= 200


def test_cluster_figures_say_how_workers_combine():
    w = [{"cpu_mean": 50.0, "cpu_peak": 90.0, "rss_peak": 300, "samples": 12, "interval_s": 0.05},
         {"cpu_mean": 30.0, "cpu_peak": 100.0, "rss_peak": 500, "samples": 10,
          "interval_s": 0.1}]
    out = combine_workers(w)
    assert out["cpu_mean_sum_of_workers"] == out["cpu_mean"] == 80.0
    assert out["cpu_peak_sum_of_workers"] == out["cpu_peak"] == 190.0
    assert out["rss_peak_max_worker"] == out["rss_peak"] == 500
    assert out["rss_peak_sum_of_workers"] == out["rss_total_peak"] == 800
    assert out["pss_at_rss_peak_max_worker"] is None  # no worker read one
    w[0]["pss_at_rss_peak"], w[1]["pss_at_rss_peak"] = 250, 200
    assert combine_workers(w)["pss_at_rss_peak_max_worker"] == 250
    assert out["unique_at_rss_peak_max_worker"] is None
    w[0]["unique_at_rss_peak"], w[1]["unique_at_rss_peak"] = 260, None  # (one without PFNs)
    assert combine_workers(w)["unique_at_rss_peak_max_worker"] == 260
    assert out["samples_min_worker"] == 10 and out["interval_s"] == 0.1
    assert combine_workers([])["cpu_mean"] is None
    # Many workers: their timelines together stay small enough for a result ConfigMap.
    many = [{"timeline": [[i * 0.05, 1.0, 10] for i in range(200)]} for _ in range(100)]
    assert all(len(w["timeline"]) <= 40 for w in combine_workers(many)["workers"])


def _spin(seconds: float) -> None:
    """Busy CPU for ``seconds``, giving the GIL away at every turn (as a driver waiting on its
    workers does): a pure-Python loop that held it would starve the sampler's thread."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        time.sleep(0)


# The phase runs in a fresh interpreter that imports only the sampler. In this test process,
# late in the suite, ray, distributed, xgboost and their threads are loaded; on a slow machine
# the sampler's thread then waits for the GIL behind the spinning main thread and got 4-8
# samples of the 0.3 s phase: a property of the test's process, not of the sampler.
_SHORT_PHASE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from bench.measure import TreeSampler
s = TreeSampler(interval=1.0)  # a long interval asked for: the burst still comes first
s.start()
end = time.perf_counter() + 0.3
while time.perf_counter() < end:
    time.sleep(0)  # busy, giving the GIL away at every turn (as a driver waiting on workers)
print(json.dumps(s.stop()))
"""


def test_sampler_gets_ten_samples_of_a_short_phase_and_a_timeline():
    done = subprocess.run([sys.executable, "-c", _SHORT_PHASE, ROOT], capture_output=True,
                          text=True, timeout=120, check=True)
    out = json.loads(done.stdout)
    assert out["samples"] >= 10 and len(out["timeline"]) == out["samples"]
    assert out["interval_s"] == 0.05
    times = [p[0] for p in out["timeline"]]
    assert times == sorted(times) and times[-1] < 5
    assert out["cpu_peak"] > 20 and out["rss_peak"] > 10 * 2**20


def test_sampler_stays_bounded_on_a_long_phase():
    s = TreeSampler()
    for i in range(1000):  # as if a long phase had been sampled 1000 times
        s._add(i * 0.05, 10.0, 100 + i)
    assert s.interval > 0.05  # doubled at each merge
    assert len(s._points) < 400
    assert s._n == 1000 and s._rss_peak == 1099


def test_machine_watch_fields_are_sane():
    w = MachineWatch()
    w.start()
    t = threading.Thread(target=_spin, args=(0.3,))
    t.start()
    t.join()
    m = w.stop()
    assert set(m) == {"before", "after", "other_cpu_percent", "busy", "busy_reason", "seconds",
                      "own_cpu_seconds"}
    for when in ("before", "after"):
        assert m[when]["load1"] >= 0 and m[when]["load5"] >= 0
        assert 0 <= m[when]["steal_percent"] <= 100
    assert m["other_cpu_percent"] >= 0 and m["seconds"] >= 0.3
    assert (m["busy"], m["busy_reason"]) == busy_rule(m["other_cpu_percent"],
                                                      m["after"]["steal_percent"])
    connected = MachineWatch(count_others=False)
    connected.start()
    assert connected.stop()["other_cpu_percent"] is None


_UNWAITED_CHILD = """
import signal, subprocess, sys, time
# As Ray's raylet does: the parent never waits for its children, so a finished child's CPU
# time never reaches the parent's children_user/children_system.
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time; "
                  "[0 for _ in iter(lambda: time.process_time() < 1.0, False)]"])
sys.stdin.read()  # (stays alive until the test closes its stdin)
"""


def test_machine_watch_counts_a_finished_child_nobody_waited_for():
    """A worker that used CPU and exited inside the trial (a Ray Train worker under the
    raylet) is the trial's own CPU, not another process's: the watch keeps the CPU time it
    last saw of every process in the tree."""
    import subprocess
    import sys

    w = MachineWatch()
    w.start()
    parent = subprocess.Popen([sys.executable, "-c", _UNWAITED_CHILD], stdin=subprocess.PIPE)
    try:
        # Wait (bounded) for the child to appear, use its second of CPU, and be gone.
        deadline = time.monotonic() + 60
        seen = False
        while time.monotonic() < deadline:
            kids = psutil.Process(parent.pid).children()
            seen = seen or bool(kids)
            if seen and not kids:
                break
            time.sleep(0.05)
        assert seen and not psutil.Process(parent.pid).children(), "the child never finished"
        m = w.stop()
    finally:
        parent.stdin.close()  # type: ignore[union-attr]
        parent.wait(timeout=30)
    # 1.0 s of the child's CPU, less at most one poll interval (0.25 s) it may have missed.
    assert m["own_cpu_seconds"] >= 0.7, m


def test_a_local_trial_records_the_machine_and_no_artifacts(tmp_path):
    """The baseline through the runner: the machine's figures are there (its workers are the
    driver itself), and ``artifacts`` asks for nothing it could record (an empty dict)."""
    from bench.runner import run_benchmark
    from bench.spec import parse_spec

    spec = parse_spec({"frameworks": ["local"], "workers": [1], "baselines": False,
                       "repeats": 2, "warmup": 1, "artifacts": True,
                       "workload": {"name": "noop"}})
    rec = run_benchmark(spec, str(tmp_path / "r.jsonl")).records[0]
    assert rec["state"] == "succeeded" and len(rec["phases"]["warmup"]) == 1
    assert rec["machine"]["other_cpu_percent"] is not None and "busy" in rec["machine"]
    assert rec["artifacts"] == {}
    assert not (tmp_path / "r-artifacts" / "local-x1-0-noop").exists()
    assert rec["resources"]["workers"][0]["timeline"]  # the closing sample at least


def test_the_sampler_counts_shared_pages_once_by_pss():
    """A 64 MiB shared mapping touched by this process and a forked child: the tree's RSS sum
    counts it twice, its PSS once (the kernel splits each shared page between the two)."""
    import mmap
    import multiprocessing as mp

    size = 64 * 2**20
    shared = mmap.mmap(-1, size)  # MAP_SHARED | MAP_ANONYMOUS
    shared.write(b"x" * size)
    ready, done = mp.get_context("fork").Event(), mp.get_context("fork").Event()

    def child():
        assert shared[size - 1:size] == b"x" and sum(shared[i] for i in range(0, size, 4096))
        ready.set()
        done.wait(60)

    proc = mp.get_context("fork").Process(target=child)
    proc.start()
    try:
        assert ready.wait(60)
        sampler = TreeSampler(interval=0.05)
        sampler.start()
        out = sampler.stop()  # its closing sample sees both processes holding the mapping
    finally:
        done.set()
        proc.join(30)
    assert out["rss_peak"] - out["pss_at_rss_peak"] > 60 * 2**20, out
    assert out["pss_at_rss_peak"] > size, out
    if os.geteuid() == 0:  # (page frame numbers are for CAP_SYS_ADMIN: see the next tests)
        # each of the mapping's pages once, like PSS here: never below PSS, never above RSS
        assert out["pss_at_rss_peak"] <= out["unique_at_rss_peak"], out
        assert out["rss_peak"] - out["unique_at_rss_peak"] > 60 * 2**20, out


def _shared_with_a_child(size: int):
    """A ``size``-byte MAP_SHARED mapping this process touched, and a forked child that touched
    it too and waits: (the mapping, the child, the event that ends it)."""
    import mmap
    import multiprocessing as mp

    shared = mmap.mmap(-1, size)
    shared.write(b"x" * size)
    ready, done = mp.get_context("fork").Event(), mp.get_context("fork").Event()

    def child():
        assert sum(shared[i] for i in range(0, size, 4096))
        ready.set()
        done.wait(60)

    proc = mp.get_context("fork").Process(target=child)
    proc.start()
    assert ready.wait(60)
    return shared, proc, done


@pytest.mark.skipif(os.geteuid() != 0, reason="page frame numbers need CAP_SYS_ADMIN (root)")
def test_unique_memory_counts_a_page_shared_outside_the_tree_whole():
    """The child alone is the tree: its PSS holds half of the 64 MiB it shares with this
    process (outside the tree), while a container holding only the child would be charged
    all of it; ``tree_unique`` counts it whole, and both processes together count it once."""
    size = 64 * 2**20
    shared, proc, done = _shared_with_a_child(size)
    try:
        child = psutil.Process(proc.pid)
        rss, pss = child.memory_info().rss, child.memory_full_info().pss
        unique = tree_unique([child])
        both = tree_unique([psutil.Process(), child])
        own = tree_unique([psutil.Process()])
    finally:
        done.set()
        proc.join(30)
        shared.close()
    assert unique is not None and both is not None and own is not None
    assert pss < rss - 28 * 2**20, (rss, pss)  # the kernel splits the shared pages in two
    assert unique > pss + 28 * 2**20 and unique > size, (unique, pss)
    assert abs(unique - rss) < 8 * 2**20, (unique, rss)  # alone, unique is its RSS
    # together: the mapping once, not twice
    assert both < own + unique - size + 8 * 2**20, (both, own, unique)


def test_unique_memory_is_none_without_page_frame_numbers():
    """A reader without CAP_SYS_ADMIN (a user, an unprivileged container) gets zeroed page
    frame numbers from pagemap: no figure rather than a wrong one. As root the check runs in a
    child whose capability bounding set lacks CAP_SYS_ADMIN (util-linux ``setpriv``)."""
    code = ("import psutil; from bench.measure import tree_unique; "
            "print(tree_unique([psutil.Process()]))")
    if os.geteuid() != 0:
        assert tree_unique([psutil.Process()]) is None
        return
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is missing: cannot drop CAP_SYS_ADMIN")
    out = subprocess.run(["setpriv", "--bounding-set", "-sys_admin", sys.executable, "-c", code],
                         capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "None", out
    # and with it, the same code reads a figure
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert int(out.stdout) > 10 * 2**20, out


# A real memory cgroup of this machine holds a process and its child that both map the same
# 128 MiB of shared memory, as a worker's container holds its processes (bench.measure
# CgroupMemory): the cgroup's working set counts those pages once, the RSS sum twice.
_IN_A_CGROUP = """
import json, mmap, os, sys, time
sys.path.insert(0, sys.argv[1])
with open(os.path.join(sys.argv[2], "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))  # first: what it allocates from here on is charged there
from bench.measure import CgroupMemory, TreeSampler
size, page = 128 << 20, mmap.PAGESIZE
shared = mmap.mmap(-1, size)  # MAP_SHARED | MAP_ANONYMOUS: shmem pages, one copy
for i in range(0, size, page):
    shared[i] = 1
ready_r, ready_w = os.pipe()
child = os.fork()
if child == 0:
    total = sum(shared[i] for i in range(0, size, page))  # maps the same pages
    os.write(ready_w, str(total).encode())
    time.sleep(120)
    os._exit(0)
assert int(os.read(ready_r, 16)) == size // page
cgroup = CgroupMemory.of_worker_container()
s = TreeSampler(interval=0.05, cgroup=cgroup)
s.start()
time.sleep(0.5)
out = s.stop()
os.kill(child, 9)
os.waitpid(child, 0)
print(json.dumps({"dir": cgroup and cgroup.directory, "out": out}))
"""


def _cgroup_run(tmp_path, env_value: str | None) -> tuple[str, dict]:
    from bench.measure import WORKER_CONTAINER_ENV, CgroupMemory

    own = CgroupMemory.of_this_process()
    if os.geteuid() != 0 or own is None or own.directory.startswith("/sys/fs/cgroup/unified"):
        pytest.skip(f"needs root and a memory cgroup of its own to create one under "
                    f"(euid {os.geteuid()}, own memory cgroup {own and own.directory})")
    cg = os.path.join(own.directory, f"testbed-test-{os.getpid()}-{tmp_path.name}")
    try:
        os.mkdir(cg)
    except OSError as e:
        pytest.skip(f"cannot create a memory cgroup under {own.directory}: {e}")
    try:
        env = {k: v for k, v in os.environ.items() if k != WORKER_CONTAINER_ENV}
        if env_value is not None:
            env[WORKER_CONTAINER_ENV] = env_value
        done = subprocess.run([sys.executable, "-c", _IN_A_CGROUP, ROOT, cg], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout)
    finally:
        os.rmdir(cg)
    return cg, out


def test_a_worker_containers_working_set_counts_shared_pages_once(tmp_path):
    from bench.kube.names import WORKER_CONTAINER_ENV as operator_sets
    from bench.measure import WORKER_CONTAINER_ENV as sampler_reads

    assert sampler_reads == operator_sets
    cg, res = _cgroup_run(tmp_path, "1")
    out, mib = res["out"], 2**20
    assert res["dir"] == cg  # found from /proc/self/cgroup and the mount, not guessed
    ws, rss = out["container_working_set_peak"], out["rss_peak"]
    assert rss >= 256 * mib  # the shared pages in both processes' RSS
    # Once in the cgroup, however many of its processes map them.
    assert 128 * mib <= ws <= rss - 96 * mib, (ws / mib, rss / mib)
    assert combine_workers([out])["container_working_set_peak_max_worker"] == ws


def test_no_working_set_outside_a_worker_container(tmp_path):
    _, res = _cgroup_run(tmp_path, None)
    assert res["dir"] is None and res["out"]["container_working_set_peak"] is None
    assert res["out"]["rss_peak"] >= 256 * 2**20
