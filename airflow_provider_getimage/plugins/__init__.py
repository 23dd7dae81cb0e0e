"""Airflow plugins of the provider: the image gallery served by the API server."""
