"""Apache Airflow provider for GetImage.io text-to-image generation."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
