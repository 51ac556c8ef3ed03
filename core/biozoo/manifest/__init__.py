"""Manifests: the schema (``schema``), path rules (``paths``), reading and writing them safely (``io``).

Nothing is re-exported here so that ``zoo list`` can read manifests without importing pydantic.
"""
