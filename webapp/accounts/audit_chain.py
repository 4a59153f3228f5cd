"""The audit log's hash chain: each entry's hash covers its content and the previous entry's hash.

Pure functions, shared by the model (new entries), the data migration (entries that existed before
the chain) and ``manage.py verify_audit``. Changing what is hashed breaks every stored chain: don't.

entry_hash = SHA-256( prev_hash "\n" canonical-JSON(seq, created_at, actor_username, action,
                      object_type, object_id, details, ip_address) )

``actor`` (the user's row id) is left out on purpose: deleting a user sets it to NULL, which must
not look like tampering; ``actor_username`` is the record of who acted.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json

GENESIS_HASH = "0" * 64


def canonical_content(*, seq, created_at, actor_username, action, object_type, object_id, details, ip_address) -> str:
    """One entry as a canonical JSON string (sorted keys, no spaces, UTC timestamp with microseconds)."""
    if isinstance(created_at, dt.datetime):
        created_at = created_at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps(
        {
            "seq": int(seq), "created_at": created_at, "actor_username": actor_username or "",
            "action": action, "object_type": object_type or "", "object_id": object_id or "",
            "details": details if details is not None else {}, "ip_address": ip_address or "",
        },
        sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False,
    )


def entry_hash(prev_hash: str, content: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


def hash_of(row, prev_hash: str) -> str:
    """The hash an entry (model instance or historical model in a migration) should carry."""
    return entry_hash(prev_hash, canonical_content(
        seq=row.seq, created_at=row.created_at, actor_username=row.actor_username, action=row.action,
        object_type=row.object_type, object_id=row.object_id, details=row.details, ip_address=row.ip_address,
    ))
