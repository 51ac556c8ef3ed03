"""Write docs/manifest.schema.json from the pydantic schema (a test checks it is current)."""

from pathlib import Path

from biozoo.manifest.io import json_schema
from biozoo.utils.atomic import atomic_write_text

target = Path(__file__).resolve().parents[1] / "docs" / "manifest.schema.json"
atomic_write_text(target, json_schema())
print(f"wrote {target}")
