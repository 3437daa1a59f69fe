"""Entry point used by `cpnet hub`."""

from cpnet.api.app import create_app, serve

__all__ = ["create_app", "serve"]
