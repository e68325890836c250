"""Celery workers and beat: ``celery -A workers worker -Q ingest,routing,outbound`` / ``celery -A workers beat``."""

from workers.app import app

__all__ = ["app"]
