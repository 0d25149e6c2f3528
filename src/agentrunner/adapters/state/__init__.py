"""StateStore adapters: `sql` serves SQLite (embedded) and PostgreSQL (distributed);
`cached` puts a Cache in front of either."""
