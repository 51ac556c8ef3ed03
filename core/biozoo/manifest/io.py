"""Read, validate and write manifests; resolve the files they name, safely."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode

from biozoo.errors import ManifestError
from biozoo.manifest.paths import check_relative_path

if TYPE_CHECKING:
    from biozoo.manifest.schema import Manifest

MANIFEST_NAME = "manifest.yaml"
MAX_MANIFEST_BYTES = 1024 * 1024  # real manifests are a few KiB; a bound keeps `zoo list` and `zoo info` fast


class _ManifestLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader (the C one is ~10x faster), minus what makes YAML ambiguous or unbounded.

    Aliases are refused: one ``*ref`` may stand for a tree of any size, so a few
    hundred bytes expand into billions of nodes (the "billion laughs"). Without
    them, the work is bounded by the file size, and libyaml bounds the nesting.
    A duplicate mapping key is refused too: a reader would see the first value,
    the loader keeps the last.
    """

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        if node in self.constructed_objects or node in self.recursive_objects:  # the same node again: an alias
            raise ConstructorError(
                None, None, "manifests may not use YAML aliases (*name); write the value out", node.start_mark
            )
        return super().construct_object(node, deep)

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: set[tuple[str, str]] = set()
            for key, _ in node.value:
                if isinstance(key, ScalarNode):
                    if (key.tag, key.value) in seen:
                        raise ConstructorError(
                            "while reading a mapping", node.start_mark, f"duplicate key {key.value!r}", key.start_mark
                        )
                    seen.add((key.tag, key.value))
        return super().construct_mapping(node, deep)


def _load_yaml(path: Path) -> Any:
    """Parse a manifest file: bounded in size before reading, no aliases, no duplicate keys."""
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{path} is {size:,} bytes; a manifest may hold at most {MAX_MANIFEST_BYTES:,}",
            "keep long texts (descriptions, metadata) in the model card or a separate file",
        )
    with open(path, "rb") as handle:
        raw = handle.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:  # grew since stat
        raise ManifestError(f"{path} is over {MAX_MANIFEST_BYTES:,} bytes", "is this really a manifest?")
    return yaml.load(raw.decode("utf-8"), Loader=_ManifestLoader)


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
        data = _load_yaml(path)
    except yaml.YAMLError as exc:
        raise ManifestError(
            f"{path} is not valid YAML for a manifest: {exc}", "check indentation and quoting"
        ) from None
    except UnicodeDecodeError:
        raise ManifestError(f"{path} is not UTF-8 text", "is this really a manifest?") from None
    return LocatedManifest(parse_manifest(data, str(path)), path.parent.absolute(), path, trusted_root)


def read_raw(path: Path) -> dict[str, Any]:
    """Parse a manifest without validating it: what ``zoo list`` needs, fast."""
    try:
        data = _load_yaml(path)
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        return {"_error": f"{type(exc).__name__}: {exc}"}
    except ManifestError as exc:
        return {"_error": exc.message}
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
