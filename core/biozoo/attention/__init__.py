"""Attention processors: the contract, the core's two processors, and selection.

Examples:
    >>> from biozoo.attention import set_processor, use_processor, explain
"""

from biozoo.attention.contract import (
    AttentionCall,
    AttentionMask,
    AttentionProcessor,
    AttentionResult,
    ProcessorCaps,
    unsupported,
)
from biozoo.attention.selection import AUTO, attend, explain, set_processor, use_processor

__all__ = [
    "AUTO",
    "AttentionCall",
    "AttentionMask",
    "AttentionProcessor",
    "AttentionResult",
    "ProcessorCaps",
    "attend",
    "explain",
    "set_processor",
    "unsupported",
    "use_processor",
]
