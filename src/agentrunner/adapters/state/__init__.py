"""State store adapters: `sql` serves every facet on SQLite (embedded) and PostgreSQL
(distributed), one module per aggregate over `engine`; `cached` puts a Cache in front of
the executions and sessions facets; `stores` hands the node one field per facet."""
