"""The engine tier: real local Ray and Dask clusters (the testbed's own, on free ports, beside
whatever the user runs): engines, workloads, torch models, faults, Ctrl-C and leftovers, Ray's
auth."""
