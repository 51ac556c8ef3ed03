"""Test-only helpers: an in-process Hub-compatible server and the pytest fixtures built on it."""
