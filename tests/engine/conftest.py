"""The engine tier: real local Ray and Dask clusters (the testbed's own, on free ports, beside
whatever the user runs): engines, workloads, torch models, faults, Ctrl-C and leftovers, Ray's
auth.

``cluster``: one real two-worker cluster per framework (``dask``, ``ray``, ``dask-on-ray``)
shared by every module that takes it (test_engines.py, test_libraries.py): a start costs 3 s
(Dask) to 20 s (Ray, Dask-on-Ray) on a loaded machine.  The fixture is session-scoped and
parametrized, so pytest runs every test of one framework, from all those modules, together
(``reorder_items`` in _pytest/fixtures.py groups the items by a session-scoped parameter).  It
lives only while consecutive tests use it (:func:`pytest_runtest_teardown`): the other modules
start their own clusters, and a driver connects to one Ray cluster at a time.
"""
import psutil
import pytest

from bench.engines import make_engine

FRAMEWORKS = ["dask", "ray", "dask-on-ray"]
SHARED = ("cluster",)
"""The session fixtures stopped after the last of a run of consecutive tests that take them."""


@pytest.fixture(scope="session", params=FRAMEWORKS)
def cluster(request):
    engine = make_engine(request.param, 2, startup_timeout=180)
    engine.start()
    procs = engine.worker_processes()
    yield engine
    engine.stop()
    # Teardown removed exactly what was started: no worker process survives.
    _gone, alive = psutil.wait_procs(procs, timeout=15)
    assert not alive, f"{request.param} left processes behind: {alive}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Stop a :data:`SHARED` fixture after the last of a run of tests that take it, instead of
    at the end of the session."""
    try:
        return (yield)
    finally:
        for name in SHARED:
            if name in item.fixturenames and (nextitem is None
                                              or name not in nextitem.fixturenames):
                for fixturedef in item._fixtureinfo.name2fixturedefs.get(name, ()):
                    if fixturedef.scope == "session":
                        # FixtureDef.finish runs the fixture's teardown (and that of the
                        # fixtures that depend on it) and drops its cached value, so a later
                        # test that takes it starts a fresh one.
                        fixturedef.finish(item._request)
