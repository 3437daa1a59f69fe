"""Encryption formats cpnet writes: chunked AES-256-GCM files (chunked.py), used by the hub's
blob store at rest (hub/blobs.py) and by tasks' data keys (datakey.py)."""
