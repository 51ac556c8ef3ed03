"""Read, validate and write manifests; resolve the files they name, safely."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from biozoo.errors import ManifestError
from biozoo.manifest.paths import check_relative_path

if TYPE_CHECKING:
    from biozoo.manifest.schema import Manifest

MANIFEST_NAME = "manifest.yaml"
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is ~10x faster; both build no objects


@dataclass(frozen=True)
class LocatedManifest:
    """A validated manifest plus the folder its relative paths are resolved against."""

    manifest: Manifest
    folder: Path
    path: Path
    trusted_root: Path | None = None  # links may point here too (the Hub cache's blobs/ beside snapshots/)

    def file(self, relative: str) -> Path:
        return resolve_inside(self.folder, relative, self.trusted_root)


def _format_errors(exc: Any, where: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {loc}: {err['msg']}")
    return f"invalid manifest {where}:\n" + "\n".join(lines)


def parse_manifest(data: Any, where: str = "") -> Manifest:
    """Validate already-parsed manifest data; errors name each offending field."""
    if not isinstance(data, dict):
        raise ManifestError(
            f"manifest {where} must be a mapping at the top level, got {type(data).__name__}",
            "see docs/manifest.md for the format",
        )
    from pydantic import ValidationError

    from biozoo.manifest.schema import Manifest

    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(
            _format_errors(exc, where), "fix the fields above; docs/manifest.md lists them all"
        ) from None


def read_manifest(path: Path | str, trusted_root: Path | None = None) -> LocatedManifest:
    """Read ``manifest.yaml`` (or a folder holding one) and validate it."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"no manifest at {path}", f"a model folder must contain {MANIFEST_NAME}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path} is not valid YAML: {exc}", "check indentation and quoting") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{path} is not UTF-8 text", "is this really a manifest?") from None
    return LocatedManifest(parse_manifest(data, str(path)), path.parent.absolute(), path, trusted_root)


def read_raw(path: Path) -> dict[str, Any]:
    """Parse a manifest without validating it: what ``zoo list`` needs, fast."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        return {"_error": f"{type(exc).__name__}: {exc}"}
    return data if isinstance(data, dict) else {"_error": "not a mapping"}


def resolve_inside(folder: Path, relative: str, trusted_root: Path | None = None) -> Path:
    """Join a manifest-relative path, refusing anything outside ``folder``.

    Symbolic links are followed and must land inside ``folder`` or, when given,
    ``trusted_root`` (the Hub cache links ``snapshots/<commit>/f`` to ``blobs/<etag>``).
    """
    try:
        check_relative_path(relative)
    except ValueError as exc:
        raise ManifestError(str(exc), "file names in a manifest must stay inside the model folder") from None
    joined = folder / relative
    target = joined.resolve()
    roots = [folder.resolve()] + ([trusted_root.resolve()] if trusted_root else [])
    if not any(target == root or root in target.parents for root in roots):
        raise ManifestError(
            f"{relative!r} resolves to {target}, outside the model folder {roots[0]}",
            "file names in a manifest must stay inside the model folder (no links pointing out)",
        )
    return joined


def write_manifest(manifest: Manifest, folder: Path) -> Path:
    """Write ``manifest.yaml`` atomically (never a half-written file)."""
    from biozoo.utils.atomic import atomic_write_text

    data = manifest.model_dump(mode="json", exclude_defaults=True)
    data = {"format_version": manifest.format_version, **data}
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return atomic_write_text(folder / MANIFEST_NAME, text)


def json_schema() -> str:
    """The manifest's JSON Schema, exported into the docs."""
    from biozoo.manifest.schema import Manifest

    return json.dumps(Manifest.model_json_schema(), indent=2, sort_keys=True) + "\n"
