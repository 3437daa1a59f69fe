"""The hub's HTTP API (FastAPI): one router per noun, auth, and one error shape."""
