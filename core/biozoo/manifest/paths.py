"""Path rules for manifests (no pydantic here: listing must stay light)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath


def check_relative_path(value: str) -> str:
    """Refuse any file name that could escape the model folder."""
    if not value or value.strip() != value:
        raise ValueError("must be a non-empty relative path without surrounding spaces")
    if "\\" in value or "\x00" in value:
        raise ValueError(f"{value!r} contains a backslash or NUL; use '/' separated relative paths")
    path = PurePosixPath(value)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"{value!r} is absolute; paths must be relative to the model folder")
    if any(part == ".." for part in path.parts):
        raise ValueError(f"{value!r} contains '..' and would escape the model folder")
    return value
