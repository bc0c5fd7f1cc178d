"""The inbound-queue consumer and, later, the scoring dispatcher and worker."""
