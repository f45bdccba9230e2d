"""Persistent object identities: tracks re-identified across episodes and sources by descriptor."""

from __future__ import annotations

import logging
import sqlite3

logger = logging.getLogger(__name__)


def forget_orphan_objects(conn: sqlite3.Connection) -> int:
    """Delete unnamed identities left without any sighting (inside the caller's transaction);
    named ones are kept (the user gave them a name). Returns how many were deleted."""
    cur = conn.execute(
        "DELETE FROM objects WHERE name IS NULL AND id NOT IN (SELECT object_id FROM sightings)"
    )
    return int(cur.rowcount or 0)
