"""The Ray-vs-Dask benchmark engine."""

__version__ = "0.1.0"
