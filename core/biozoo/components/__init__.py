"""Component ports (torch-free) and base classes (``biozoo.components.base``, torch)."""

from biozoo.components.ports import Port, Ports, match_inputs

__all__ = ["Port", "Ports", "match_inputs"]
