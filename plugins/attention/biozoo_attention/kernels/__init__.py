"""Attention kernels, one module per family; each is imported only when the registry first needs it."""
