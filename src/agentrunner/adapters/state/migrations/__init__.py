"""Alembic migrations of agentrunner's schema; they run on SQLite and PostgreSQL alike."""

# The newest migration's revision, known without Alembic: every process compares the
# database's revision with it at start, and importing Alembic and reading every script to
# learn it cost each start ~70 ms of CPU. A unit test checks it is the scripts' head: add a
# migration, move it.
HEAD = "0020"
