"""Workload registry: one module per workload, imported on first use (torch only when needed)."""
from __future__ import annotations

from importlib import import_module

from .base import Outcome, Workload

_CLASSES = {
    "knn": ("knn", "Knn"),
    "kmeans": ("kmeans", "KMeans"),
    "pca": ("pca", "Pca"),
    "gridsearch": ("gridsearch", "GridSearch"),
    "classify": ("classify", "Classify"),
    "cnn": ("cnn", "Cnn"),
    "resnet18": ("resnet18", "ResNet18"),
    "dataframe": ("dataframe", "DataFrame"),
    "tasks": ("tasks", "Tasks"),
    "noop": ("noop", "Noop"),
}


def get_workload(name: str) -> Workload:
    module, cls = _CLASSES[name]
    return getattr(import_module(f"{__name__}.{module}"), cls)()


__all__ = ["Outcome", "Workload", "get_workload"]
