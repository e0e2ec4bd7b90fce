"""model-router: an inference request router in front of Envoy (its xDS control plane
and ext_proc server)."""

__version__ = "0.1.0"
"""The package version (pyproject reads it from here)."""
