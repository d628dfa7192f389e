"""The ``libraries`` tier: one workload per question a Ray or Dask user brings, each written
with the framework's own library (Ray Data, Ray Train, Ray Tune, Ray's XGBoostTrainer against
Dask DataFrame, torch DDP on Dask workers, Dask-ML's searches, ``xgboost.dask``).

The ``core`` tier (``bench.workloads``) runs the same algorithm on every framework; this tier
answers "which framework runs my pipeline faster with the libraries I would actually use".
"""
