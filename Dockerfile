# One image for every role: `agentrunner serve <role>` picks what the container runs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md alembic.ini ./
COPY src ./src
RUN pip install . && useradd --create-home agentrunner
COPY config ./config

USER agentrunner
ENV HOST=0.0.0.0 AGENTS_DIR=/app/config/agents DATA_DIR=/app/data
EXPOSE 8001 8002 8003 8004 8005
CMD ["agentrunner", "up"]
