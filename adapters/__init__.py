"""Infrastructure: PostgreSQL, Redis and RabbitMQ, settings, logging and telemetry."""
