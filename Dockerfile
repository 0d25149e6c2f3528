# One image for every role: `agentrunner serve <role>` picks what the container runs.
# Safe by default: it runs as an unprivileged user (uid 10001), and API keys are required
# (ENABLE_API_AUTH=true: give it API_KEYS, see .env.example and docs/security.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md alembic.ini ./
COPY src ./src
RUN pip install . \
    && useradd --create-home --uid 10001 --user-group agentrunner \
    && mkdir -p /app/data && chown agentrunner:agentrunner /app/data
COPY config ./config

# agentrunner, named by uid so a runtime that checks for non-root (runAsNonRoot) can tell.
USER 10001:10001
ENV HOST=0.0.0.0 ENABLE_API_AUTH=true AGENTS_DIR=/app/config/agents DATA_DIR=/app/data
EXPOSE 8001 8002 8003 8004 8005
CMD ["agentrunner", "up"]
