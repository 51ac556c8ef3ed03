"""Cells read chunk by chunk, so memory does not grow with the number of cells.

A :class:`CellSource` is one ``.h5ad`` file (opened backed, read-only), a folder of ``.h5ad`` shards, or a zarr
store (or a folder of them). Opening reads only what every chunk needs to be placed and checked: each shard's cell
count and gene names. :meth:`CellSource.read` then brings one chunk's rows into memory as an ordinary AnnData
(expression, layers and obs of those cells, all genes), which any single-cell pipeline takes as it is.

Shards must have the same genes in the same order: a run is one gene matching, one tokenisation, one model input
contract. Different gene sets are refused with the shard named (subset them to the common genes first).

A shard that cannot be opened or read does not stop the others: its chunks are reported as failed, the others'
results are kept, and a ``--resume`` after the fix computes only what is missing.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biozoo.singlecell.errors import DataError

H5AD, ZARR = ".h5ad", ".zarr"


@dataclass(frozen=True)
class Chunk:
    """Rows ``start:stop`` of shard ``shard``; ``number`` is its place among that shard's chunks."""

    shard: int
    number: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        """The chunk's file stem in a sharded output (sorts in cell order)."""
        return f"s{self.shard:05d}-c{self.number:06d}"

    @property
    def cells(self) -> int:
        return self.stop - self.start


@dataclass
class Shard:
    """One input file: its path, and once opened, its cell count (``None``: it could not be opened, see ``error``)."""

    path: Path
    n_obs: int | None = None
    error: str | None = None


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and ((path / ".zattrs").exists() or (path / "zarr.json").exists())


def shard_paths(path: Path) -> list[Path]:
    """The files of an input: itself (``.h5ad`` or a zarr store) or a folder's ``*.h5ad`` / ``*.zarr`` in name
    order."""
    if not path.exists():
        raise DataError(f"{path} does not exist", hint="check the path (relative paths start at the current folder)")
    if path.is_file() or _is_zarr(path):
        return [path]
    shards = sorted(p for p in path.iterdir() if (p.is_file() and p.suffix == H5AD) or _is_zarr(p))
    if not shards:
        raise DataError(
            f"{path} is a folder without .h5ad files or zarr stores",
            hint="give an .h5ad file, a zarr store, or a folder of .h5ad shards",
        )
    return shards


def chunk_seed(seed: int, chunk: Chunk) -> int:
    """The seed a chunk's preprocessing uses: fixed by (seed, shard, chunk), so a chunk gives the same cells'
    results whichever engine or worker runs it, and whether or not the run was resumed."""
    return int(np.random.SeedSequence([seed, chunk.shard, chunk.number]).generate_state(1)[0])


class _Opened:
    """One opened shard: backed AnnData for .h5ad; zarr groups read element by element for zarr."""

    def __init__(self, path: Path) -> None:
        import anndata

        self.path = path
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, message="Variable names are not unique")
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"(anndata|pandas)(\.|$)")
            if _is_zarr(path):
                import zarr

                self.group = zarr.open_group(str(path), mode="r")
                self.backed = None
                self.obs = anndata.io.read_elem(self.group["obs"])
                self.var = anndata.io.read_elem(self.group["var"])
            else:
                self.group = None
                self.backed = anndata.read_h5ad(path, backed="r")
                self.obs, self.var = self.backed.obs, self.backed.var

    @property
    def n_obs(self) -> int:
        return len(self.obs)

    def read(self, start: int, stop: int) -> Any:
        """Rows ``start:stop`` as an in-memory AnnData."""
        import anndata

        if self.backed is not None:
            return self.backed[start:stop].to_memory()
        layers = {}
        if "layers" in self.group:
            layers = {name: self._rows(self.group["layers"][name], start, stop) for name in self.group["layers"]}
        return anndata.AnnData(
            X=self._rows(self.group["X"], start, stop) if "X" in self.group else None,
            obs=self.obs.iloc[start:stop].copy(),
            var=self.var.copy(),
            layers=layers,
        )

    @staticmethod
    def _rows(element: Any, start: int, stop: int) -> Any:
        import anndata

        if element.attrs.get("encoding-type", "") in ("csr_matrix", "csc_matrix"):
            return anndata.io.sparse_dataset(element)[start:stop]
        return np.asarray(element[start:stop])

    def close(self) -> None:
        if self.backed is not None:
            self.backed.file.close()


class CellSource:
    """An input of one or more shards, read one chunk at a time (see the module docstring)."""

    def __init__(self, path: Path | str, *, var_column: str | None = None) -> None:
        self.path = Path(path)
        self.var_column = var_column
        self.shards = [Shard(p) for p in shard_paths(self.path)]
        self._open: dict[int, _Opened] = {}
        self.var: Any = None
        for i, shard in enumerate(self.shards):
            try:
                opened = self._opened(i)
            except Exception as exc:  # any reader failure: the shard is named, the others go on
                shard.error = f"{type(exc).__name__}: {exc}"
                continue
            shard.n_obs = opened.n_obs
            self._check_genes(i, opened)
            if len(self.shards) > 1:
                self._close(i)  # a folder of many shards: keep one open at a time

    def _opened(self, i: int) -> _Opened:
        if i not in self._open:
            if len(self._open) >= 1 and len(self.shards) > 1:
                for j in list(self._open):
                    self._close(j)
            self._open[i] = _Opened(self.shards[i].path)
        return self._open[i]

    def _close(self, i: int) -> None:
        opened = self._open.pop(i, None)
        if opened is not None:
            opened.close()

    def _genes(self, var: Any) -> np.ndarray:
        if self.var_column is None:
            return np.asarray(var.index, dtype=str)
        if self.var_column not in var.columns:
            return np.asarray([], dtype=str)  # the pipeline's own gene matching names the missing column
        return np.asarray(var[self.var_column], dtype=str)

    def _check_genes(self, i: int, opened: _Opened) -> None:
        if self.var is None:
            self.var, self._first = opened.var, i
            return
        mine, first = self._genes(opened.var), self._genes(self.var)
        if mine.shape != first.shape or not np.array_equal(mine, first):
            missing = np.setdiff1d(first, mine)
            extra = np.setdiff1d(mine, first)
            detail = (
                f"{len(missing)} of the first shard's genes missing, {len(extra)} others"
                if len(missing) or len(extra)
                else "the same genes in another order"
            )
            raise DataError(
                f"shard {self.shards[i].path.name} has other genes than {self.shards[self._first].path.name} "
                f"({len(mine):,} vs {len(first):,}: {detail})",
                hint="give shards with the same genes in the same order, e.g. subset each to the genes they share "
                "(adata[:, common_genes]) before writing it",
            )

    @property
    def n_obs(self) -> int:
        """Cells in the shards that could be opened."""
        return sum(s.n_obs or 0 for s in self.shards)

    @property
    def failed(self) -> list[Shard]:
        return [s for s in self.shards if s.error is not None]

    def chunks(self, chunk_size: int) -> list[Chunk]:
        """Every chunk of every shard that could be opened, in cell order."""
        out = []
        for i, shard in enumerate(self.shards):
            for number, start in enumerate(range(0, shard.n_obs or 0, chunk_size)):
                out.append(Chunk(i, number, start, min(start + chunk_size, shard.n_obs or 0)))
        return out

    def read(self, chunk: Chunk) -> Any:
        """One chunk's cells as an in-memory AnnData (all genes, their expression, layers and obs)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, message="Variable names are not unique")
            return self._opened(chunk.shard).read(chunk.start, chunk.stop)

    def obs(self, shard: int) -> Any:
        """One shard's obs (cell annotations), for the assembled output."""
        return self._opened(shard).obs

    def fingerprint(self) -> list[dict[str, Any]]:
        """What identifies the input for ``--resume``: each shard's name, size in bytes, cell count and a hash of
        its cell names (the names, not the data: a few MB even for an atlas)."""
        out = []
        for i, shard in enumerate(self.shards):
            entry: dict[str, Any] = {"name": shard.path.name, "cells": shard.n_obs}
            if shard.path.is_file():
                entry["bytes"] = shard.path.stat().st_size
            if shard.n_obs is not None:
                names = "\n".join(map(str, self._opened(i).obs.index)).encode()
                entry["obs_names_sha256"] = hashlib.sha256(names).hexdigest()
            out.append(entry)
        return out

    def close(self) -> None:
        for i in list(self._open):
            self._close(i)
