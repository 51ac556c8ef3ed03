"""Autoregressive single-cell transformers for biozoo.

Importing this package is cheap; the model lives in ``biozoo_autoregressive.model``.
"""

__version__ = "0.1.0"
