"""Channel connectors: plain Python, no Django models, no Celery (enforced by import-linter)."""
