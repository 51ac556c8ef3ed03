"""biozoo-geneformer-mini: a worked example biozoo plugin (a Geneformer-style rank-value BERT encoder).

What it offers is declared in :mod:`biozoo_geneformer_mini.plugin`; docs/authoring.md walks through every file.
"""

__version__ = "0.1.0"
