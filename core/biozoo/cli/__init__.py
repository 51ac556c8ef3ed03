"""The ``zoo`` command line (``biozoo.cli.app``)."""
