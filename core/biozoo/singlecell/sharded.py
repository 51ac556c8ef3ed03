"""Resumable, sharded results of a chunked run, and their assembly into one ``.h5ad``.

While a chunked ``zoo embed`` or ``zoo annotate`` runs, its results go to ``OUTPUT.parts/`` beside the output:

* ``run.json``: the model (id and weight hashes), the settings that change results (task, chunk size, seed,
  genes column, layer, key, dtype, autocast, attention processors) and the input's fingerprint (each shard's
  name, size, cell count, cell-names hash);
* ``chunks/s00000-c000000.npz``, ...: one file per finished chunk (its values and cell names), each written
  atomically: a chunk file exists only complete, so the set of files *is* the record of finished chunks.

A killed run leaves the folder; ``--resume`` checks that ``run.json`` matches (another model, other settings or
other shards are refused, naming what differs) and computes only the missing chunks, and those of a shard that
changed since (fixed after a data error: its old chunks are discarded, with a warning). When all are there the
output is assembled chunk by chunk (obs of the input, ``obsm[key]`` or annotation columns, provenance; no
expression matrix, so the file stays small and the memory flat) and the parts folder is removed. Several
workers may write chunks at once: a chunk written twice (a retried worker) is replaced by identical content,
never duplicated.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from biozoo.errors import BiozooError
from biozoo.singlecell.stream import CellSource, Chunk
from biozoo.utils.atomic import atomic_path, atomic_write_text

RUN_FILE = "run.json"
CHUNKS = "chunks"
#: the index of a per-shard output folder (``--per-shard``): its files in cell order, their cells, the provenance
INDEX = "index.json"
INDEX_FORMAT = "biozoo per-shard output 1"


def parts_folder(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{where}.{key}" if where else key)
        return out
    return [] if old == new else [f"{where}: {old!r} then, {new!r} now"]


def _input_differences(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> tuple[list[str], list[int]]:
    """What refuses a resume (other shards, by name and order) and which shards changed since (by index): fixed
    after a data error, or unreadable then. Their finished chunks are stale and are computed again."""
    if [s["name"] for s in old] != [s["name"] for s in new]:
        return [f"input shards: {[s['name'] for s in old]} then, {[s['name'] for s in new]} now"], []
    return [], [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]


class ShardedOutput:
    """``OUTPUT.parts/``: where a chunked run's results live until they are assembled (see the module docstring)."""

    def __init__(self, folder: Path, run: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
        self.folder = Path(folder)
        self.chunks_folder = self.folder / CHUNKS
        self.run = run
        existing = self.folder / RUN_FILE
        if self.folder.exists() and not resume:
            if not overwrite:
                raise BiozooError(
                    f"a previous run left {self.folder} ({len(self.finished())} chunk(s) done)",
                    "add --resume to continue it, or --overwrite to start over",
                )
            shutil.rmtree(self.folder)
        changed: list[int] = []
        if resume and existing.exists():
            before = json.loads(existing.read_text())
            shards, changed = _input_differences(before.get("input", []), run.get("input", []))
            differ = _differences({**before, "input": None}, {**run, "input": None}) + shards
            if differ:
                raise BiozooError(
                    f"--resume: {self.folder} was made by another run ({'; '.join(differ[:4])})",
                    "resume with the same model, input and settings, or use --overwrite to start over",
                )
        self.chunks_folder.mkdir(parents=True, exist_ok=True)
        for index in changed:
            self._discard_shard(index, run["input"][index]["name"])
        if changed or not existing.exists():
            atomic_write_text(existing, json.dumps(run, indent=2) + "\n")

    def _discard_shard(self, index: int, name: str) -> None:
        """A shard changed since the run started: its finished chunks are stale, so they are computed again."""
        import warnings

        from biozoo.errors import BiozooWarning

        stale = sorted(self.chunks_folder.glob(f"s{index:05d}-*.npz"))
        for path in stale:
            path.unlink()
        if stale:
            warnings.warn(f"{name} changed since the run started: its {len(stale)} finished chunk(s) are computed "
                          "again", BiozooWarning, stacklevel=3)  # fmt: skip

    def finished(self) -> set[str]:
        """The chunks whose result file exists (complete: each is written atomically)."""
        if not self.chunks_folder.is_dir():
            return set()
        return {p.name.removesuffix(".npz") for p in self.chunks_folder.glob("*.npz")}

    def path(self, chunk: Chunk) -> Path:
        return self.chunks_folder / f"{chunk.name}.npz"

    def save(self, chunk: Chunk, values: np.ndarray, obs_names: Iterable[str], steps: list[str]) -> None:
        save_chunk(self.chunks_folder, chunk, values, obs_names, steps)

    def load(self, chunk: Chunk) -> tuple[np.ndarray, np.ndarray, list[str]]:
        with np.load(self.path(chunk), allow_pickle=False) as data:
            return data["values"], data["obs_names"], [str(s) for s in data["steps"]]

    def values(self, chunks: list[Chunk], obs_names: Any) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, values)`` of each chunk in cell order, each checked to hold the input's cells there."""
        row = 0
        for chunk in chunks:
            values, names, _ = self.load(chunk)
            expected = np.asarray(obs_names[row : row + chunk.cells], dtype=str)
            if values.shape[0] != chunk.cells or not np.array_equal(names.astype(str), expected):
                raise BiozooError(
                    f"{self.path(chunk).name} does not hold the cells of rows {row}-{row + chunk.cells} of the input",
                    f"the input changed since the run started: rerun with --overwrite (parts in {self.folder})",
                )
            yield row, values
            row += chunk.cells

    def assemble(
        self,
        source: CellSource,
        chunks: list[Chunk],
        stage: Path,
        biozoo_uns: dict[str, Any],
        *,
        obsm_key: str | None = None,
        columns: Callable[[Iterator[np.ndarray]], dict[str, Any]] | None = None,
        per_shard: bool = False,
    ) -> tuple[Any, int]:
        """Write the new ``.h5ad`` ``stage`` from every chunk, in cell order: the input's obs, plus the columns
        ``columns`` makes from the chunks' values (annotations), ``obsm[obsm_key]`` streamed chunk by chunk
        (embeddings), and ``uns['biozoo']``. With ``per_shard``, ``stage`` is a new folder instead, with one such
        file per input shard and ``index.json`` (:data:`INDEX`). Returns the obs written and the values' width."""
        import pandas as pd

        obs = pd.concat([source.obs(i) for i in sorted({c.shard for c in chunks})])
        dims = self.load(chunks[0])[0].shape[1] if chunks else 0
        added = columns(values for _, values in self.values(chunks, obs.index)) if columns is not None else {}
        obs = obs.assign(**added)
        if not per_shard:
            self._write(stage, obs, chunks, biozoo_uns, obsm_key, dims)
            return obs, dims
        stage.mkdir()
        files, row = [], 0
        for shard, name in _per_shard_names(source, chunks).items():
            its = [c for c in chunks if c.shard == shard]
            cells = sum(c.cells for c in its)
            self._write(stage / name, obs.iloc[row : row + cells], its, biozoo_uns, obsm_key, dims)
            files.append({"file": name, "input": source.shards[shard].path.name, "cells": cells})
            row += cells
        index = {"format": INDEX_FORMAT, "cells": len(obs), "obsm": obsm_key, "obs": list(added), "files": files,
                 "biozoo": biozoo_uns}  # fmt: skip
        atomic_write_text(stage / INDEX, json.dumps(index, indent=2, default=str) + "\n")
        return obs, dims

    def _write(
        self, stage: Path, obs: Any, chunks: list[Chunk], biozoo_uns: dict[str, Any], obsm_key: str | None, dims: int
    ) -> None:
        """One ``.h5ad``: ``obs``, the chunks' values streamed into ``obsm[obsm_key]``, no expression matrix."""
        import h5py
        import pandas as pd
        from anndata.io import write_elem

        n = len(obs)
        with h5py.File(stage, "w") as f:
            f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
            write_elem(f, "obs", _plain(obs))
            write_elem(f, "var", pd.DataFrame(index=pd.Index([], dtype=object)))
            for name in ("layers", "obsp", "varm", "varp"):
                write_elem(f, name, {})
            obsm = f.create_group("obsm")
            obsm.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
            if obsm_key is not None:
                data = None
                for row, values in self.values(chunks, obs.index):
                    if data is None:
                        data = obsm.create_dataset(obsm_key, shape=(n, dims), dtype=values.dtype,
                                                   chunks=(min(n, 4096), dims))  # fmt: skip
                        data.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
                    data[row : row + len(values)] = values
            write_elem(f, "uns", {"biozoo": biozoo_uns})

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _per_shard_names(source: CellSource, chunks: list[Chunk]) -> dict[int, str]:
    """The output file of each input shard that has cells: its name with ``.h5ad`` (``part7.zarr`` ->
    ``part7.h5ad``), numbered when two shards would share one."""
    shards = sorted({c.shard for c in chunks})
    names = {i: Path(source.shards[i].path.name).stem + ".h5ad" for i in shards}
    if len(set(names.values())) < len(names):
        names = {i: f"{i:05d}-{name}" for i, name in names.items()}
    return names


def save_chunk(folder: Path, chunk: Chunk, values: np.ndarray, obs_names: Iterable[str], steps: list[str]) -> None:
    """One chunk's results, atomically (a worker elsewhere on the cluster calls this too)."""
    target = Path(folder) / f"{chunk.name}.npz"
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh, values=np.ascontiguousarray(values), obs_names=np.asarray(list(obs_names), dtype=str),
            steps=np.asarray(steps, dtype=str),
        )  # fmt: skip
        fh.flush()
        os.fsync(fh.fileno())


def _plain(frame: Any) -> Any:
    """obs with pandas' string columns as object strings, which every anndata release writes and reads."""
    import pandas as pd

    from biozoo.singlecell.anndata_io import _object_strings

    return _object_strings(frame.copy(), pd)
