"""Alembic migrations of agentrunner's schema; they run on SQLite and PostgreSQL alike."""
