FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN useradd --system --uid 10001 vigil

COPY pyproject.toml README.md ./
COPY domain ./domain
COPY services ./services
COPY adapters ./adapters
COPY outbox ./outbox
COPY workers ./workers
COPY portal ./portal
COPY vigil ./vigil
COPY migrations ./migrations
RUN pip install .

USER vigil
ENTRYPOINT ["vigil"]
CMD ["portal"]
