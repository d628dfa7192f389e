"""The engine's optional Kubernetes adapter: what the runner does inside a trial's pod.

* :mod:`.names`   the contract shared by the runner and the operator: environment variables,
                  ConfigMap keys, label keys and the names of a trial's objects;
* :mod:`.channel` the result channel (one ConfigMap per trial, written by the runner);
* :mod:`.faults`  pod-deletion faults (the runner deletes its own trial's pods);
* :mod:`.client`  the Kubernetes API client both sides build.

The operator (``testbed_operator``) imports this package; nothing in ``bench`` outside the
runner command (``bench.cli``) does, and the engines and workloads never do.  Only
:mod:`.client` and the functions that call the API import the ``kubernetes`` package, so the
names and the pure builders load without it.
"""
