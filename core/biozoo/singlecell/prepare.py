"""The steps every single-cell model runs before its own tokenizer, shared by all plugins.

Check the expression (finite, non-negative, unique genes), match genes to the model's
vocabulary by a chosen ``var`` column, and bring values to log-normalised scale: raw counts are
normalised to ``normalize_total`` and log1p-transformed, normalised input is log1p-transformed,
log-normalised input is used as is, and scaled input (negative values) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from biozoo.singlecell.anndata_io import GeneMatch, match_genes, validate_expression
from biozoo.singlecell.errors import DataError
from biozoo.singlecell.normalize import log1p, normalize_total
from biozoo.singlecell.vocab import GeneVocabulary


@dataclass
class MatchedExpression:
    """Log-normalised expression of the matched genes (cells x matched genes) and what was done."""

    x: Any  #: dense or sparse, columns = ``match.matched`` genes in var order
    gene_ids: Any  #: vocabulary id of each column
    match: GeneMatch
    input_kind: str
    steps: list[str] = field(default_factory=list)


def log_normalized_matched(
    adata: Any,
    vocab: GeneVocabulary,
    *,
    n_specials: int,
    var_column: str | None = None,
    layer: str | None = None,
    target_sum: float = 1e4,
    min_gene_fraction: float = 0.5,
) -> MatchedExpression:
    """Validate, match genes (refusing when neither most data genes nor most model genes match), log-normalise.

    Unmatched genes are dropped *before* counts are normalised, as scGPT's ``embed_data`` and
    scModelForge's data pipeline both do: totals are over the genes the model sees.
    """
    kind = validate_expression(adata, layer=layer, var_column=var_column)
    if kind == "scaled":
        raise DataError(
            "the expression matrix is scaled (negative values)",
            hint="use raw counts or log-normalised data (e.g. adata.raw.to_adata())",
        )
    match = match_genes(
        adata,
        vocab,
        var_column,
        min_fraction=min_gene_fraction,
        min_model_fraction=min_gene_fraction,
        n_specials=n_specials,
    )
    x = adata.X if layer is None else adata.layers[layer]
    x = x[:, match.matched]
    steps = [match.summary()]
    if kind == "counts":
        x = log1p(normalize_total(x, target_sum))
        steps.append(f"normalize_total({target_sum:g}) + log1p (input: raw counts)")
    elif kind == "normalized":
        x = log1p(x)
        steps.append("log1p (input: normalised, not logged)")
    else:
        steps.append("used as is (input: log-normalised)")
    return MatchedExpression(x, match.ids[match.matched], match, kind, steps)
