"""The hub's data-at-rest key, and sealing tasks' secret values with it (AES-256-GCM,
`cryptography`).

The key lives in a file, not in the store, so that a copy of the database alone reveals no
secret: ``DATA_DIR/secrets.key`` (32 random bytes, mode 0600), made on first use (the hub's
start: its blob store needs it), or the file ``CPNET_SECRETS_KEY_FILE`` names (give every hub
replica the same one). Each sealed value is bound to its task id (AES-GCM associated data), so a
ciphertext copied to another task does not open.

It is the hub's one key for data at rest: the blob store (hub/blobs.py) derives its own
AES-256-GCM key from it, so a copy of ``DATA_DIR/blobs`` without this file reveals no blob
either. One file to keep out of backups and to give every replica, not one per use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cpnet.config import HubSettings

KEY_BYTES = 32
NONCE_BYTES = 12


class SecretsKeyError(RuntimeError):
    """The key file is missing or unusable, with what to do."""


def key_path(settings: HubSettings) -> Path:
    raw = os.environ.get("CPNET_SECRETS_KEY_FILE")
    return Path(raw) if raw else settings.data_dir / "secrets.key"


def load_key(settings: HubSettings, create: bool = True) -> bytes:
    """The sealing key, made (mode 0600) when there is none yet and `create` is set.

    A new key is written whole to a temp file, fsynced, then linked to its name, which fails if
    another process (a replica starting beside this one) linked its key first: then that key is
    the key. So no reader ever sees a half-written key, and a crash never loses one that sealed
    something (every blob and secret would go with it).
    """
    path = key_path(settings)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise SecretsKeyError(f"no secrets key at {path}") from None
        key = _create_key(path)
    if len(key) != KEY_BYTES:
        raise SecretsKeyError(f"{path} must hold {KEY_BYTES} bytes, not {len(key)}")
    return key


def _create_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process made it meanwhile: theirs is the key
            return path.read_bytes()
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return key
    finally:
        tmp.unlink(missing_ok=True)


def seal(key: bytes, task_id: str, values: dict) -> bytes:
    """nonce || AES-GCM(key, canonical JSON of the values, associated data = task id)."""
    nonce = os.urandom(NONCE_BYTES)
    plain = json.dumps(values, sort_keys=True, separators=(",", ":")).encode()
    return nonce + AESGCM(key).encrypt(nonce, plain, task_id.encode())


def unseal(key: bytes, task_id: str, sealed: bytes) -> dict:
    """The values `seal` sealed for this task; SecretsKeyError if they do not open (another
    key, another task, tampered)."""
    try:
        plain = AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], task_id.encode())
    except InvalidTag:
        raise SecretsKeyError(
            f"the secrets of task {task_id} do not open with this hub's key "
            "(CPNET_SECRETS_KEY_FILE must be the key they were sealed with)"
        ) from None
    return dict(json.loads(plain))
