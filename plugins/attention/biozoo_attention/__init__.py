"""biozoo-attention: attention kernels for every model in the zoo, and a diffusers-compatible ``Attention``."""

from typing import Any

__all__ = ["Attention", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import ``Attention`` (and with it torch) on first use, so listing plugins never pays for torch."""
    if name == "Attention":
        from biozoo_attention.diffusers_compat import Attention

        return Attention
    raise AttributeError(f"module 'biozoo_attention' has no attribute {name!r}")
