"""Read, check and write AnnData (.h5ad) for single-cell models, with errors a biologist can act on.

anndata is imported inside the functions that need it (``pip install 'biozoo[anndata]'``), so
the core imports without it. The checks here run before tokenization because scGPT quietly
produces meaningless embeddings for z-scored input, Ensembl ids against a symbol vocabulary,
or a half-matched gene list.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from biozoo.errors import BiozooError
from biozoo.singlecell.errors import DataError
from biozoo.singlecell.normalize import InputKind, detect_input
from biozoo.singlecell.vocab import GeneVocabulary
from biozoo.utils.atomic import atomic_path

if TYPE_CHECKING:
    from anndata import AnnData

#: HDF5 files start with this, at offset 0 or 512, 1024, 2048, ... when a user block precedes it.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_EXAMPLES = 5
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")


def _anndata() -> Any:
    try:
        import anndata
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise BiozooError(
            "reading or writing .h5ad files needs the 'anndata' package",
            hint="pip install 'biozoo[anndata]'",
        ) from exc
    return anndata


def _is_hdf5(path: Path) -> bool:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        offset = 0
        while offset + len(HDF5_SIGNATURE) <= size:
            handle.seek(offset)
            if handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False


def _what_it_looks_like(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"PK"):
        return "a zip archive"
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed (e.g. a .mtx.gz or .csv.gz)"
    if head.startswith(b"%%MatrixMarket"):
        return "a Matrix Market file (use scanpy.read_mtx / read_10x_mtx)"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the data (run `git lfs pull`)"
    if head and all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        return "a text file (CSV/TSV? read it with anndata.read_csv or pandas)"
    if not head:
        return "empty"
    return "not HDF5"


def read_h5ad(path: Path | str) -> AnnData:
    """Read an .h5ad file into memory; missing, non-HDF5 and non-AnnData files get a clear ``DataError``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist", hint="check the path (relative paths start at the current folder)")
    if path.is_dir():
        kind = "a zarr store" if (path / ".zattrs").exists() or (path / "zarr.json").exists() else "a folder"
        raise DataError(f"{path} is {kind}, not an .h5ad file", hint="for zarr use anndata.read_zarr")
    if not _is_hdf5(path):
        raise DataError(
            f"{path} is not an .h5ad file: it has no HDF5 signature ({_what_it_looks_like(path)})",
            hint="convert it to AnnData and save it with adata.write_h5ad(...)",
        )
    anndata = _anndata()
    try:
        return anndata.read_h5ad(path)
    except Exception as exc:
        raise DataError(
            f"{path} is an HDF5 file but not a readable AnnData ({type(exc).__name__}: {exc})",
            hint="the file may be truncated, or another HDF5 format (10x .h5: scanpy.read_10x_h5; loom: "
            "anndata.read_loom)",
        ) from exc


def write_h5ad_atomic(adata: AnnData, path: Path | str, *, compression: str | None = None) -> Path:
    """Write ``adata`` to ``path`` through a temporary file beside it: a crash leaves the old file or none."""
    _anndata()
    path = Path(path)
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression=compression)
    return path


def _matrix(adata: AnnData, layer: str | None) -> Any:
    if layer is None:
        if adata.X is None:
            raise DataError("adata.X is empty (None)", hint="pass layer=... naming a layer that holds expression")
        return adata.X
    if layer not in adata.layers:
        raise DataError(
            f"layer {layer!r} not found; available layers: {sorted(adata.layers.keys()) or 'none'}",
            hint="pass one of those, or layer=None for adata.X",
        )
    return adata.layers[layer]


def _gene_names(adata: AnnData, var_column: str | None) -> tuple[np.ndarray, str]:
    """The gene names to match and a label for messages; ``None``/``"index"`` mean ``var_names``."""
    if var_column is None or var_column == "index":
        return np.asarray(adata.var_names, dtype=object), "var_names (adata.var.index)"
    if var_column not in adata.var.columns:
        raise DataError(
            f"var column {var_column!r} not found; available var columns: {list(map(str, adata.var.columns))}",
            hint="pass one of those, or var_column=None (or 'index') to use adata.var_names",
        )
    return np.asarray(adata.var[var_column], dtype=object), f"var column {var_column!r}"


def _sample(names: Sequence[Any], limit: int = _EXAMPLES) -> str:
    return ", ".join(repr(str(n)) for n in names[:limit]) + (", ..." if len(names) > limit else "")


def validate_expression(adata: AnnData, layer: str | None = None, var_column: str | None = None) -> InputKind:
    """Refuse expression that scGPT cannot use; return what the matrix looks like (see ``detect_input``).

    Refused: NaN/inf, negative values (z-scored data), cells with no expressed gene, and duplicate
    gene names in ``var_column`` (``None`` = ``var_names``).
    """
    x = _matrix(adata, layer)
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    values = np.asarray(x.data if hasattr(x, "tocsr") else x)
    if values.size and not np.all(np.isfinite(values)):
        bad = ~np.isfinite(values)
        raise DataError(
            f"{where} holds {int(bad.sum())} NaN or infinite values",
            hint="recompute the matrix from raw counts, or drop the affected cells/genes",
        )
    if values.size and values.min() < 0:
        raise DataError(
            f"{where} has negative values (minimum {values.min():.3g}); scGPT needs non-negative expression",
            hint="this looks z-scored/scaled (sc.pp.scale); use raw counts or log-normalised data instead, "
            "e.g. a counts layer or adata.raw.to_adata()",
        )
    if hasattr(x, "tocsr"):
        expressed = np.asarray((abs(x) > 0).sum(axis=1)).ravel()
    else:
        expressed = np.count_nonzero(np.asarray(x), axis=1)
    empty = np.flatnonzero(expressed == 0)
    if empty.size:
        names = [str(adata.obs_names[i]) for i in empty[: _EXAMPLES + 1]]
        raise DataError(
            f"{empty.size} of {adata.n_obs} cells express no gene in {where} (e.g. {_sample(names)})",
            hint="drop them first, e.g. sc.pp.filter_cells(adata, min_genes=1)",
        )
    genes, label = _gene_names(adata, var_column)
    names, counts = np.unique(genes.astype(str), return_counts=True)
    duplicated = [str(n) for n in names[counts > 1]]
    if duplicated:
        raise DataError(
            f"{len(duplicated)} gene names appear more than once in {label} (e.g. {_sample(duplicated)})",
            hint="sum or drop the duplicates, or call adata.var_names_make_unique()",
        )
    return detect_input(x)


@dataclass(frozen=True)
class GeneMatch:
    """How the genes of an AnnData map onto a vocabulary."""

    ids: np.ndarray  #: int64 vocabulary id per var, -1 where not in the vocabulary
    column: str | None  #: the var column matched (None = var_names)
    unmatched_examples: tuple[str, ...]

    @property
    def matched(self) -> np.ndarray:
        """Boolean mask over var: gene is in the vocabulary."""
        return self.ids >= 0

    @property
    def n_matched(self) -> int:
        return int(np.count_nonzero(self.ids >= 0))

    @property
    def n_total(self) -> int:
        return int(self.ids.size)

    @property
    def fraction(self) -> float:
        return self.n_matched / self.n_total if self.n_total else 0.0


def _column_match_rates(adata: AnnData, vocab: GeneVocabulary, skip: str | None) -> list[tuple[str | None, float]]:
    """Fraction of vocabulary hits for var_names and every string-like var column (first 2000 values)."""
    candidates: list[tuple[str | None, np.ndarray]] = [(None, np.asarray(adata.var_names, dtype=object))]
    for column in adata.var.columns:
        series = adata.var[column]
        if series.dtype == object or str(series.dtype) in ("category", "string"):
            candidates.append((str(column), np.asarray(series, dtype=object)))
    rates = []
    for name, values in candidates:
        if name == skip or not values.size:
            continue
        head = values[:2000]
        rates.append((name, float(np.mean([v in vocab for v in head]))))
    return sorted(rates, key=lambda item: -item[1])


def match_genes(
    adata: AnnData,
    vocab: GeneVocabulary,
    var_column: str | None = None,
    *,
    min_fraction: float = 0.5,
    min_genes: int = 1,
) -> GeneMatch:
    """Look every gene up in ``vocab``; refuse when fewer than ``min_fraction`` (and ``min_genes``) match.

    ``var_column=None`` or ``"index"`` uses ``adata.var_names``. Bin and tokenize only the matched
    genes (``adata[:, match.matched]``), as scGPT's ``embed_data`` does: bins are per-cell quantiles,
    so unmatched genes would shift them.
    """
    column = None if var_column == "index" else var_column
    genes, label = _gene_names(adata, column)
    ids = vocab.ids(genes)
    unmatched = [str(g) for g in genes[ids < 0][:_EXAMPLES]]
    match = GeneMatch(ids=ids, column=column, unmatched_examples=tuple(unmatched))
    if match.n_matched >= max(min_genes, 1) and match.fraction >= min_fraction:
        return match
    message = (
        f"only {match.n_matched} of {match.n_total} genes ({100 * match.fraction:.1f}%) in {label} are in the "
        f"vocabulary (need at least {100 * min_fraction:.0f}% and {max(min_genes, 1)}); "
        f"not found e.g. {_sample(unmatched)}"
    )
    hints = []
    better = [(name, rate) for name, rate in _column_match_rates(adata, vocab, column) if rate > match.fraction]
    if better:
        shown = ", ".join(f"{'var_names' if n is None else repr(n)} ({100 * r:.0f}%)" for n, r in better[:3])
        hints.append(f"other gene columns match better: {shown}; pass var_column=<that column> (None = var_names)")
    looks_ensembl = np.mean([bool(_ENSEMBL.match(str(g))) for g in genes[:2000]]) > 0.5 if genes.size else False
    vocab_ensembl = any(_ENSEMBL.match(t) for t in itertools.islice(vocab, 2000))
    if looks_ensembl and not vocab_ensembl:
        hints.append("these look like Ensembl ids but the vocabulary holds gene symbols; map them to symbols first")
    if not hints:
        hints.append("check the species and the gene naming (symbols vs ids) against the model's vocabulary")
    raise DataError(message, hint="; ".join(hints))
