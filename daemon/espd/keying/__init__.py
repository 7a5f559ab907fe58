"""Keying: where SA keys and sequence numbers come from (manual keys, reservations)."""
