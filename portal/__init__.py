"""The Litestar application serving the GraphQL API, health and metrics."""
