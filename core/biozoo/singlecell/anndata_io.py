"""Read, check and write AnnData (.h5ad) for single-cell models, with errors a biologist can act on.

anndata is imported inside the functions that need it (``pip install 'biozoo[anndata]'``), so
the core imports without it. The checks here run before tokenization because scGPT quietly
produces meaningless embeddings for z-scored input, Ensembl ids against a symbol vocabulary,
or a half-matched gene list.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from biozoo.errors import BiozooError
from biozoo.singlecell.errors import DataError
from biozoo.singlecell.normalize import InputKind, detect_input
from biozoo.singlecell.vocab import GeneVocabulary
from biozoo.utils.atomic import atomic_path, ensure_room

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
        with warnings.catch_warnings():
            # validate_expression names duplicate genes with a fix; anndata's warning would come first and say less
            warnings.filterwarnings("ignore", message="Variable names are not unique", category=UserWarning)
            # anndata's own use of deprecated pandas/numpy options (pandas 3 warns about them): not the user's to fix
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(anndata|pandas)(\.|$)")
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"(anndata|pandas)(\.|$)")
            return anndata.read_h5ad(path)
    except Exception as exc:
        raise DataError(
            f"{path} is an HDF5 file but not a readable AnnData ({type(exc).__name__}: {exc})",
            hint="the file may be truncated, or another HDF5 format (10x .h5: scanpy.read_10x_h5; loom: "
            "anndata.read_loom)",
        ) from exc


def write_h5ad_atomic(adata: AnnData, path: Path | str, *, compression: str | None = None) -> Path:
    """Write ``adata`` to ``path`` through a temporary file beside it: a crash leaves the old file or none.

    Before writing, the free space (and the process's file size limit) is compared with the size the
    file will have: HDF5 can crash the interpreter when a write fails half-way, so a full disk must be
    refused before the first byte. pandas 3's string columns are written as plain strings, which every
    anndata release reads (anndata refuses to write them as nullable strings unless told to).
    """
    _anndata()
    path = Path(path)
    ensure_room(path, estimated_h5ad_bytes(adata))
    with _plain_strings(adata), atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression=compression)
    return path


def estimated_h5ad_bytes(adata: AnnData) -> int:
    """An upper estimate of an uncompressed .h5ad's size: every array's bytes plus the tables' and some slack."""

    def nbytes(value: Any) -> int:
        if hasattr(value, "data") and hasattr(value, "indices"):  # scipy sparse
            return int(value.data.nbytes + value.indices.nbytes + getattr(value, "indptr", value.indices).nbytes)
        return int(getattr(value, "nbytes", 0))

    arrays = [adata.X, *adata.layers.values(), *adata.obsm.values(), *adata.varm.values()]
    arrays += [*adata.obsp.values(), *adata.varp.values()]
    tables = [adata.obs, adata.var] + ([adata.raw.var, adata.raw.X] if adata.raw is not None else [])
    table_bytes = sum(int(t.memory_usage(deep=True).sum()) if hasattr(t, "memory_usage") else nbytes(t) for t in tables)
    return sum(nbytes(a) for a in arrays if a is not None) + table_bytes + (1 << 20)


@contextmanager
def _plain_strings(adata: AnnData) -> Iterator[None]:
    """Temporarily store pandas' string dtype (the default in pandas 3) as object in obs/var and their indices."""
    import pandas as pd

    saved = []
    for owner, attr in ((adata, "obs"), (adata, "var")):
        frame = getattr(owner, attr)
        plain = _object_strings(frame, pd)
        if plain is not frame:
            saved.append((owner, attr, frame))
            setattr(owner, attr, plain)
    try:
        yield
    finally:
        for owner, attr, frame in saved:
            setattr(owner, attr, frame)


def _object_strings(frame: Any, pd: Any) -> Any:
    def plain(values: Any) -> Any:
        if isinstance(values.dtype, pd.StringDtype):
            return values.astype(object)
        if isinstance(values.dtype, pd.CategoricalDtype) and isinstance(values.cat.categories.dtype, pd.StringDtype):
            return values.cat.set_categories(values.cat.categories.astype(object))
        return values

    changed = {c: plain(frame[c]) for c in frame.columns}
    changed = {c: v for c, v in changed.items() if v is not frame[c]}
    index_strings = isinstance(frame.index.dtype, pd.StringDtype)
    if not changed and not index_strings:
        return frame
    frame = frame.copy()
    for column, values in changed.items():
        frame[column] = values
    if index_strings:
        frame.index = frame.index.astype(object)
    return frame


def _matrix(adata: AnnData, layer: str | None) -> Any:
    if layer is None:
        if adata.X is None:
            raise DataError(
                "adata.X is empty (None)",
                hint=f"pass --layer NAME (layer= in Python) naming a layer that holds expression; "
                f"layers here: {sorted(adata.layers.keys()) or 'none'}",
            )
        return adata.X
    if layer not in adata.layers:
        raise DataError(
            f"layer {layer!r} not found; available layers: {sorted(adata.layers.keys()) or 'none'}",
            hint="pass one of those with --layer NAME (layer= in Python), or leave --layer out (layer=None) "
            "to use adata.X",
        )
    return adata.layers[layer]


def _gene_names(adata: AnnData, var_column: str | None) -> tuple[np.ndarray, str]:
    """The gene names to match and a label for messages; ``None``/``"index"`` mean ``var_names``."""
    if var_column is None or var_column == "index":
        return np.asarray(adata.var_names, dtype=object), "var_names (adata.var.index)"
    if var_column not in adata.var.columns:
        raise DataError(
            f"var column {var_column!r} not found; available var columns: {list(map(str, adata.var.columns))}",
            hint="pass one of those with --var-column NAME (var_column= in Python), or --var-column index "
            "(var_column=None) to use adata.var_names",
        )
    return np.asarray(adata.var[var_column], dtype=object), f"var column {var_column!r}"


def _sample(names: Sequence[Any], limit: int = _EXAMPLES) -> str:
    return ", ".join(repr(str(n)) for n in names[:limit]) + (", ..." if len(names) > limit else "")


def refuse_empty_anndata(adata: AnnData, action: str = "embed, annotate or train on") -> None:
    """An AnnData with no cells or no genes: say so before any step fails on an empty array."""
    if adata.n_obs == 0:
        raise DataError(
            f"the AnnData has 0 cells ({adata.n_obs} x {adata.n_vars}); nothing to {action}",
            hint="check the input file, or the filter that removed every cell (adata.n_obs is 0)",
        )
    if adata.n_vars == 0:
        raise DataError(
            f"the AnnData has 0 genes ({adata.n_obs} x {adata.n_vars}); nothing to {action}",
            hint="check the input file, or the filter that removed every gene (adata.n_vars is 0)",
        )


def validate_expression(adata: AnnData, layer: str | None = None, var_column: str | None = None) -> InputKind:
    """Refuse expression that scGPT cannot use; return what the matrix looks like (see ``detect_input``).

    Refused: NaN/inf, negative values (z-scored data), cells with no expressed gene, and duplicate
    gene names in ``var_column`` (``None`` = ``var_names``).
    """
    refuse_empty_anndata(adata)
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


def _percent(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole``; a partial share never rounds to 0% or 100%."""
    if whole <= 0:
        return "0%"
    share = 100 * part / whole
    if share in (0, 100):
        return f"{share:.0f}%"
    if share < 0.1:
        return "<0.1%"
    if share > 99.9:
        return ">99.9%"
    return f"{share:.1f}%" if share < 10 or share > 99 else f"{share:.0f}%"


def _model_genes(vocab: GeneVocabulary, n_specials: int | None) -> int:
    """Genes in the vocabulary: all tokens but the specials (``<pad>``, ``<cls>``, ... when not told how many)."""
    if n_specials is None:
        n_specials = sum(1 for t in vocab if t.startswith("<") and t.endswith(">"))
    return max(len(vocab) - n_specials, 0)


def _distinct(ids: np.ndarray) -> int:
    return int(np.unique(ids[ids >= 0]).size)


@dataclass(frozen=True)
class GeneMatch:
    """How the genes of an AnnData map onto a vocabulary."""

    ids: np.ndarray  #: int64 vocabulary id per var, -1 where not in the vocabulary
    column: str | None  #: the var column matched (None = var_names)
    unmatched_examples: tuple[str, ...]
    n_model_genes: int = 0  #: genes in the model's vocabulary (special tokens not counted)

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
        """Share of the data's genes found in the vocabulary."""
        return self.n_matched / self.n_total if self.n_total else 0.0

    @property
    def n_model_matched(self) -> int:
        """Distinct vocabulary genes the data has."""
        return _distinct(self.ids)

    @property
    def model_fraction(self) -> float:
        """Share of the model's genes present in the data."""
        return self.n_model_matched / self.n_model_genes if self.n_model_genes else 0.0

    def summary(self) -> str:
        """Both sides of the match: ``matched 743 genes: 97% of the model's 765, 2.4% of the data's 30,727``."""
        where = "var_names" if self.column is None else f"var column {self.column!r}"
        return (
            f"matched {self.n_matched:,} genes ({where}): "
            f"{_percent(self.n_model_matched, self.n_model_genes)} of the model's {self.n_model_genes:,}, "
            f"{_percent(self.n_matched, self.n_total)} of the data's {self.n_total:,}"
        )


#: var columns compared when suggesting a better gene column (the error path only)
_MAX_CANDIDATE_COLUMNS = 100


def _better_columns(
    adata: AnnData, vocab: GeneVocabulary, current: str | None, n_matched: int
) -> list[tuple[str | None, int, int]]:
    """``(column, genes matched, distinct model genes)`` for var_names and string-like var columns matching more."""
    candidates: list[tuple[str | None, Any]] = [(None, adata.var_names)]
    for column in list(adata.var.columns)[:_MAX_CANDIDATE_COLUMNS]:
        series = adata.var[column]
        if series.dtype == object or str(series.dtype) in ("category", "string", "str"):
            candidates.append((str(column), series))
    better = []
    for name, values in candidates:
        if name == current:
            continue
        ids = vocab.ids(np.asarray(values, dtype=object))
        hits = int(np.count_nonzero(ids >= 0))
        if hits > n_matched:
            better.append((name, hits, _distinct(ids)))
    return sorted(better, key=lambda item: -item[1])


def _var_column_flag(column: str | None) -> str:
    if column is None:
        return "--var-column index (var_column=None in Python)"
    return f"--var-column {column} (var_column={column!r} in Python)"


def _rule(min_fraction: float, min_genes: int, min_model_fraction: float | None) -> str:
    """The acceptance rule in words, from both sides when both count."""
    shares = []
    if min_fraction > 0:
        shares.append(f"{_percent(min_fraction, 1)} of the data's genes")
    if min_model_fraction:
        shares.append(f"{_percent(min_model_fraction, 1)} of the model's genes")
    count = f"at least {min_genes:,} matched gene{'s' if min_genes > 1 else ''}"
    if not shares:
        return f"need {count}"
    rule = f"need at least {' or '.join(shares)}"
    return f"{rule}, and {count}" if min_genes > 1 else rule


def match_genes(
    adata: AnnData,
    vocab: GeneVocabulary,
    var_column: str | None = None,
    *,
    min_fraction: float = 0.5,
    min_genes: int = 1,
    min_model_fraction: float | None = None,
    n_specials: int | None = None,
) -> GeneMatch:
    """Look every gene up in ``vocab``; refuse when too few match.

    Accepted when at least ``min_genes`` (and at least 1) genes match and either the share of the
    data's genes reaches ``min_fraction`` or, when given, the share of the model's genes reaches
    ``min_model_fraction``. The model's genes are the vocabulary less ``n_specials`` special tokens
    (default: the tokens written ``<...>``). ``var_column=None`` or ``"index"`` uses
    ``adata.var_names``. Bin and tokenize only the matched genes (``adata[:, match.matched]``), as
    scGPT's ``embed_data`` does: bins are per-cell quantiles, so unmatched genes would shift them.
    """
    column = None if var_column == "index" else var_column
    genes, label = _gene_names(adata, column)
    ids = vocab.ids(genes)
    unmatched = [str(g) for g in genes[ids < 0][:_EXAMPLES]]
    match = GeneMatch(ids, column, tuple(unmatched), _model_genes(vocab, n_specials))
    needed = max(min_genes, 1)
    enough_model = min_model_fraction is not None and match.model_fraction >= min_model_fraction
    if match.n_matched >= needed and (match.fraction >= min_fraction or enough_model):
        return match
    model = f"the model's vocabulary ({match.n_model_genes:,} genes)"
    if match.n_total == 0:
        message = f"the data has no genes: {label} is empty"
    elif match.n_matched == 0:
        message = f"none of the {match.n_total:,} genes in {label} is in {model}"
    else:
        gene, are = ("gene", "is") if match.n_matched == 1 else ("genes", "are")
        message = (
            f"only {match.n_matched:,} {gene} of {label} {are} in the model's vocabulary: "
            f"{_percent(match.n_matched, match.n_total)} of the data's {match.n_total:,} and "
            f"{_percent(match.n_model_matched, match.n_model_genes)} of the model's {match.n_model_genes:,}"
        )
    if match.n_total:
        message += f"; {_rule(min_fraction, min_genes, min_model_fraction)}"
    if unmatched:
        message += f"; not found e.g. {_sample(unmatched)}"
    hints = []
    better = _better_columns(adata, vocab, column, match.n_matched)
    if better:
        shown = ", ".join(
            f"{'var_names' if name is None else repr(name)} ({hits:,} genes, "
            f"{_percent(distinct, match.n_model_genes)} of the model's)"
            for name, hits, distinct in better[:3]
        )
        hints.append(f"other gene columns match more genes: {shown}; pass {_var_column_flag(better[0][0])}")
    looks_ensembl = np.mean([bool(_ENSEMBL.match(str(g))) for g in genes[:2000]]) > 0.5 if genes.size else False
    vocab_ensembl = any(_ENSEMBL.match(t) for t in itertools.islice(vocab, 2000))
    if looks_ensembl and not vocab_ensembl:
        hints.append("these look like Ensembl ids but the vocabulary holds gene symbols; map them to symbols first")
    if not hints:
        hints.append(
            "check the species and the gene naming (symbols vs ids) against the model's vocabulary, "
            "or pick the var column that holds gene names with --var-column NAME (var_column= in Python)"
        )
    raise DataError(message, hint="; ".join(hints))
