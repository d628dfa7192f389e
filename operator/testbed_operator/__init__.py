"""The Kubernetes side of the testbed: the Benchmark CRD and the manifests the operator applies.

Imported as ``testbed_operator`` (the folder is ``operator/``, whose name belongs to Python's
standard library). It holds no measuring code: trials run ``testbed runner`` from the engine.
"""
