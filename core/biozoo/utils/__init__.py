"""Small helpers shared across the core (no torch at import time)."""
