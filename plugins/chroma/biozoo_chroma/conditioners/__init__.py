"""Conditioners for Chroma's backbone sampler (the reference's contract ``(X, C, O, U, t) -> (X, C, O, U, t)``):
symmetric assemblies, motif scaffolding, and chains of them. Pass one as ``ChromaBackbone.sample(conditioner=...)``.
"""

# graph before diffusion: importing biozoo_chroma.diffusion first runs into the superposition <-> graph.keys cycle
import biozoo_chroma.graph  # noqa: F401  isort: skip
from biozoo_chroma.conditioners.compose import ComposedConditioner, postprocess
from biozoo_chroma.conditioners.conditional_mvn import ConditionalBackboneMVN
from biozoo_chroma.conditioners.errors import ConditionerError
from biozoo_chroma.conditioners.groups import cyclic_group, dihedral_group, group_order, point_group
from biozoo_chroma.conditioners.substructure import SubstructureConditioner, motif_mask
from biozoo_chroma.conditioners.symmetry import SymmetryConditioner, asymmetric_unit, flat_bottom_potential

__all__ = [
    "ComposedConditioner",
    "ConditionalBackboneMVN",
    "ConditionerError",
    "SubstructureConditioner",
    "SymmetryConditioner",
    "asymmetric_unit",
    "cyclic_group",
    "dihedral_group",
    "flat_bottom_potential",
    "group_order",
    "motif_mask",
    "point_group",
    "postprocess",
]
