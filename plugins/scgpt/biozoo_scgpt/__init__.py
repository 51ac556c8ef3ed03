"""scGPT for biozoo. Importing this package is cheap; the model code lives in ``biozoo_scgpt.model``."""

__version__ = "0.1.0"
