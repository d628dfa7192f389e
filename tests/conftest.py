import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Functions defined in test modules are pickled by reference: the worker processes the tests
# start (they inherit this environment) must be able to import the test modules too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (HERE, os.environ.get("PYTHONPATH", "")) if p)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
