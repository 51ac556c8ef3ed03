"""Shared building blocks every plugin reuses: attention, transformer layers, positional encodings."""
