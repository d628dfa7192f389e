"""The engine's optional Kubernetes adapter; the operator imports it."""
