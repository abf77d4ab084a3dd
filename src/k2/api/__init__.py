"""The HTTP API (FastAPI): routes, stream, keys and limits. See docs/api.md."""
