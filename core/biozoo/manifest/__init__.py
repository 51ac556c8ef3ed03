"""Manifests: the schema (``schema``) and reading/writing them safely (``io``)."""

from biozoo.manifest.io import LocatedManifest, parse_manifest, read_manifest, write_manifest
from biozoo.manifest.schema import Manifest

__all__ = ["LocatedManifest", "Manifest", "parse_manifest", "read_manifest", "write_manifest"]
