"""The market: price books and binding quotes (pure arithmetic; the hub holds the state)."""
