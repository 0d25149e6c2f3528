"""StateStore adapters: `sql` serves SQLite (embedded) and PostgreSQL (distributed)."""
