"""The one fingerprint helper: SHA-256 of bytes, and of a value's canonical JSON (keys sorted), which names
configurations (`config_hash`), mapping entries (`entry_sha256`) and the sweep's inversion-cache entries.

The JSON spellings differ between those three on purpose: each digest is stored in existing result rows, job folders
and cache entries, and changing a spelling would make every folder look as if it held another configuration."""

from __future__ import annotations

import hashlib
import json
from typing import Any

COMPACT = (",", ":")
SPACED = (", ", ": ")  # json.dumps' default, which inversion-cache keys were first written with


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_digest(value: Any, separators: tuple[str, str] = COMPACT, ensure_ascii: bool = True) -> str:
    """SHA-256 (hex) of `value` as JSON with sorted keys; values JSON cannot spell are written as str()."""
    text = json.dumps(value, sort_keys=True, separators=separators, ensure_ascii=ensure_ascii, default=str)
    return sha256(text.encode())
