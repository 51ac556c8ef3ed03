"""Architectures the core ships (plugins ship their own)."""
