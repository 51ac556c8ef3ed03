"""Manifests of named models (data only), shipped in the core wheel as ``biozoo._registry``."""
