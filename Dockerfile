# The driftline worker image (used by docker-compose.yml on machines with a Docker engine).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY driftline ./driftline
COPY streams ./streams
COPY agents ./agents
COPY schemas ./schemas
RUN pip install --no-cache-dir .
COPY deploy/pipeline.toml /etc/driftline/pipeline.toml
EXPOSE 6066
ENTRYPOINT ["driftline"]
CMD ["worker", "-c", "/etc/driftline/pipeline.toml", "--web-host", "0.0.0.0"]
