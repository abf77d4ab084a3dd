"""Observability: Prometheus metrics over a registry passed in by the entry point (no global registry)."""

from k2.observability.metrics import METRICS, Metrics, MetricSpec

__all__ = ["METRICS", "MetricSpec", "Metrics"]
