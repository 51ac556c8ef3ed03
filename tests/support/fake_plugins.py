"""Install throwaway plugin distributions (dist-info + module) on sys.path, as pip would."""

from __future__ import annotations

import importlib
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from biozoo.registry import reset_registry


@dataclass
class FakePlugins:
    root: Path

    def add(
        self,
        entry_name: str,
        source: str,
        *,
        dist: str | None = None,
        requires: str | None = "biozoo>=0.1,<1",
        module: str | None = None,
    ) -> str:
        """Write a distribution ``dist`` whose entry point ``entry_name`` loads a module with ``source``."""
        dist = dist or f"biozoo-{entry_name}"
        module = module or f"fake_{entry_name}_{abs(hash((dist, source))) % 10**8}"
        (self.root / f"{module}.py").write_text(textwrap.dedent(source))
        info = self.root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        meta = f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n"
        if requires:
            meta += f"Requires-Dist: {requires}\n"
        (info / "METADATA").write_text(meta)
        (info / "entry_points.txt").write_text(f"[biozoo.plugins]\n{entry_name} = {module}\n")
        importlib.invalidate_caches()
        reset_registry()  # the next get_registry() discovers the new plugin
        return module


@pytest.fixture
def fake_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePlugins:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    yield FakePlugins(root)
    for name in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[name]
