"""Refresh the sha256 and size of the files a manifest names, after re-training (``zoo manifest hash``).

Why edit the YAML text instead of dumping the parsed manifest: a hand-written manifest has comments, an order
and a layout its author chose; a refresh must change the hashes and sizes and nothing else. The values are found
by their positions in the parsed YAML (so quoting, flow style and comments are handled by the parser, not by
pattern matching) and replaced in place; the file is then rewritten atomically with its mode kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from biozoo.errors import ManifestError
from biozoo.manifest.io import MANIFEST_NAME, LocatedManifest, parse_manifest, read_manifest, resolve_inside


@dataclass(frozen=True)
class FileHash:
    """One file the manifest names: what the manifest says and what the file holds."""

    path: str  # as written in the manifest
    sha256: str
    size: int | None  # None: the manifest gives no size (weights) or has no size field (test vectors)
    actual_sha256: str
    actual_size: int

    @property
    def changed(self) -> bool:
        return self.sha256 != self.actual_sha256 or (self.size is not None and self.size != self.actual_size)


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str


def locate(folder: Path | str) -> LocatedManifest:
    """The manifest of a model folder (or a manifest file), validated, with errors that name the folder."""
    folder = Path(folder)
    if not folder.exists():
        raise ManifestError(f"{folder} does not exist", "give the model folder that holds manifest.yaml")
    if folder.is_dir() and not (folder / MANIFEST_NAME).is_file():
        raise ManifestError(
            f"{folder} has no {MANIFEST_NAME}", "give a model folder (`zoo convert` or `zoo finetune` write one)"
        )
    return read_manifest(folder)


def file_hashes(located: LocatedManifest) -> list[FileHash]:
    """Hash every local weights file and the test vectors the manifest names."""
    from biozoo.utils.hashing import HashMemo

    manifest, memo = located.manifest, HashMemo()
    named: list[tuple[str, Path, str, int | None]] = []
    if manifest.weights is not None:
        weights = _weights_folder(located)
        named += [(f.path, resolve_inside(weights, f.path), f.sha256, f.size) for f in manifest.weights.files]
    if manifest.test_vectors is not None:
        tv = manifest.test_vectors
        named.append((tv.file, located.file(tv.file), tv.sha256, None))
    hashes = []
    for name, path, sha256, size in named:
        if not path.is_file():
            raise ManifestError(
                f"{name}, named by {located.path}, is missing ({path})",
                "write the file, or remove it from the manifest",
            )
        hashes.append(FileHash(name, sha256, size, memo.digest(path), path.stat().st_size))
    return hashes


def rewrite(text: str, hashes: list[FileHash]) -> str:
    """``text`` with each file's sha256 (and size, for weights; added when missing) set to what the file holds."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)  # the pure-Python parser: marks count characters
    actual = {h.path: h for h in hashes}
    edits: list[_Edit] = []
    newline = "\r\n" if "\r\n" in text else "\n"
    for entry, name_key in _file_nodes(root):
        name = _value(entry, name_key)
        if not isinstance(name, ScalarNode) or name.value not in actual:
            continue
        found = actual[name.value]
        sha = _value(entry, "sha256")
        if isinstance(sha, ScalarNode):
            edits.append(_replace(sha, found.actual_sha256))
        if name_key != "path":  # test vectors: no size field
            continue
        size = _value(entry, "size")
        if isinstance(size, ScalarNode):
            edits.append(_replace(size, str(found.actual_size)))
        elif size is None and isinstance(sha, ScalarNode):
            edits.append(_insert_after(text, entry, sha, f"size: {found.actual_size}", newline))
    for edit in sorted(edits, key=lambda e: e.start, reverse=True):
        text = text[: edit.start] + edit.text + text[edit.end :]
    return text


def _file_nodes(root: Node | None) -> list[tuple[MappingNode, str]]:
    """The mappings of ``weights.files[*]`` (named by ``path``) and ``test_vectors`` (named by ``file``)."""
    found: list[tuple[MappingNode, str]] = []
    files = _value(_value(root, "weights"), "files")
    if isinstance(files, SequenceNode):
        found += [(item, "path") for item in files.value if isinstance(item, MappingNode)]
    vectors = _value(root, "test_vectors")
    if isinstance(vectors, MappingNode):
        found.append((vectors, "file"))
    return found


def _value(node: Node | None, key: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    return next((v for k, v in node.value if isinstance(k, ScalarNode) and k.value == key), None)


def _key(node: MappingNode, key: str) -> ScalarNode:
    return next(k for k, _ in node.value if isinstance(k, ScalarNode) and k.value == key)


def _replace(node: ScalarNode, value: str) -> _Edit:
    """Replace a scalar in place, keeping its quotes."""
    quote = node.style if node.style in ("'", '"') else ""
    return _Edit(node.start_mark.index, node.end_mark.index, f"{quote}{value}{quote}")


def _insert_after(text: str, entry: MappingNode, sha: ScalarNode, item: str, newline: str) -> _Edit:
    """Add ``item`` to ``entry`` after its sha256: ``, item`` in a flow mapping, a new line in a block one."""
    at = sha.end_mark.index
    if entry.flow_style:
        return _Edit(at, at, f", {item}")
    indent = " " * _key(entry, "sha256").start_mark.column
    line_end = text.find("\n", at)
    if line_end < 0:  # the last line, without a newline
        return _Edit(len(text), len(text), f"{newline}{indent}{item}")
    return _Edit(line_end + 1, line_end + 1, f"{indent}{item}{newline}")


def refresh(folder: Path | str, *, check: bool = False) -> tuple[LocatedManifest, list[FileHash]]:
    """Check that the model assembles, then set every named file's sha256/size in the manifest (unless ``check``).

    Returns the manifest as now written and the files that were (``check``: that are) out of date. Nothing is
    written when the model does not assemble or nothing changed; otherwise the manifest is rewritten atomically,
    keeping its mode, and everything but the hashes and sizes stays byte for byte. The new text is validated
    before it is written, so an invalid manifest is never left behind.
    """
    from biozoo.utils.atomic import atomic_write_bytes

    located = locate(folder)
    hashes = file_hashes(located)
    assemble_on_meta(located)
    changed = [h for h in hashes if h.changed]
    if check or not changed:
        return located, changed
    text = rewrite(located.path.read_bytes().decode("utf-8"), hashes)
    parse_manifest(yaml.safe_load(text), str(located.path))
    atomic_write_bytes(located.path, text.encode("utf-8"))
    located = read_manifest(located.path)
    left = [h.path for h in file_hashes(located) if h.changed]
    if left:  # a layout rewrite() does not know: never claim success
        raise ManifestError(
            f"could not update {', '.join(left)} in {located.path}",
            "set their sha256 (and size) by hand: `sha256sum FILE` and `stat -c %s FILE`",
        )
    return located, changed


def _weights_folder(located: LocatedManifest) -> Path:
    """The local folder the weights are in (``weights.source`` is '.' or a sub-folder; hf:// is refused)."""
    spec, manifest = located.manifest.weights, located.manifest
    assert spec is not None
    if spec.source.startswith("hf://"):
        raise ManifestError(
            f"the weights of {manifest.id} are on the Hub ({spec.source}), not in {located.folder}",
            "refresh the hashes in the folder the weights were written to, then publish it (`zoo publish`)",
        )
    return located.folder if spec.source == "." else located.file(spec.source)


def assemble_on_meta(located: LocatedManifest) -> None:
    """Build the model the manifest describes on the meta device (no memory, no weights read): the configs fit."""
    from biozoo.assembly import assemble
    from biozoo.weights import header_elements, shard_paths

    manifest = located.manifest
    if manifest.weights is not None:
        shards = shard_paths(_weights_folder(located), manifest.weights)
        assemble(manifest, weights_hold=header_elements(shards))
