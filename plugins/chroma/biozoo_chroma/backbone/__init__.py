"""Chroma's backbone denoiser and sampler (issue 10, items 2 and 3): frame transforms and averaging, the frame
builder, the coordinate update, and :class:`ChromaBackbone` (registry architecture ``chroma.backbone``)."""

from biozoo_chroma.backbone.frames import FrameBuilder
from biozoo_chroma.backbone.model import ChromaBackbone
from biozoo_chroma.backbone.sampling import DesignNotAvailableError, check_chain_lengths
from biozoo_chroma.backbone.transforms import average_transforms, equilibrate_transforms
from biozoo_chroma.backbone.update import GraphBackboneUpdate

__all__ = [
    "ChromaBackbone",
    "DesignNotAvailableError",
    "FrameBuilder",
    "GraphBackboneUpdate",
    "average_transforms",
    "check_chain_lengths",
    "equilibrate_transforms",
]
