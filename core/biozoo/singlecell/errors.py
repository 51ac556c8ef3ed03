"""Errors for bad single-cell input.

Single-cell files fail in many quiet ways (z-scored ``X``, Ensembl ids against a symbol
vocabulary, empty cells); each one gets a message that names the problem and the fix.
"""

from __future__ import annotations

from biozoo.errors import BiozooError


class DataError(BiozooError, ValueError):
    """Single-cell input (h5ad file, expression matrix, gene names, vocabulary) cannot be used as given.

    Also a ``ValueError`` so callers that already catch scanpy/numpy value errors catch it too.
    """
