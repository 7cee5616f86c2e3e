"""Alembic migrations of the registry's schema; ``registry.schema.upgrade`` runs them at every start."""
