"""Embedders: image (optionally masked) → L2-normalised float32 vectors."""
