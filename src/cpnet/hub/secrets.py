"""The key that seals tasks' secret values, and sealing them (AES-256-GCM, `cryptography`).

The key lives in a file, not in the store, so that a copy of the database alone reveals no
secret: ``DATA_DIR/secrets.key`` (32 random bytes, mode 0600), made on first use, or the file
``CPNET_SECRETS_KEY_FILE`` names (give every hub replica the same one). Each sealed value is
bound to its task id (AES-GCM associated data), so a ciphertext copied to another task does not
open.
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
    """The sealing key, made (mode 0600) when there is none yet and `create` is set."""
    path = key_path(settings)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise SecretsKeyError(f"no secrets key at {path}") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile
            return load_key(settings, create=False)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
    if len(key) != KEY_BYTES:
        raise SecretsKeyError(f"{path} must hold {KEY_BYTES} bytes, not {len(key)}")
    return key


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
