"""``zoo convert chroma BACKBONE.pt -o OUT``: a licensed Chroma backbone checkpoint -> a biozoo model folder.

The reference's ``save_model`` writes ``torch.save({"init_kwargs": ..., "model_state_dict": ..., **metadata})``.
This is the only place the chroma plugin reads a pickle, with ``torch.load(weights_only=True)``, which refuses
anything but tensors and plain containers (a pickle carrying code is refused without running it).

* ``init_kwargs`` become the manifest's ``architecture.config`` as they are (tuples become lists); a key that
  ``GraphBackbone`` does not take (a design model's, say) is refused by name.
* The state dict goes through :func:`~biozoo_chroma.graph.keys.convert_reference_state_dict` and must then match
  the model key for key and shape for shape: the reference loads with ``strict=False`` and would silently leave
  a missing tensor at its random initial value; here a missing, unexpected or misshaped key is an error that
  names it. Every buffer is kept (the 2G3N centering means, the random Fourier matrices, the RBF centres).
* The folder gets ``model.safetensors``, test vectors (a fixed noised batch and this model's ``denoise`` output,
  dithers off) so ``zoo verify`` works, and a manifest that states the weights' licence: the Chroma Parameters
  License (academic and non-profit use; not redistributable). Never publish or share a converted folder.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from biozoo.errors import WeightsError

MAX_CHECKPOINT_BYTES = 4 * 1024**3  # the public design model is ~0.1B parameters; a backbone is far smaller
REQUIRED = ("init_kwargs", "model_state_dict")
LICENSE = "LicenseRef-Chroma-Parameters-License"
LICENSE_TEXT = (
    "Chroma Parameters License (Generate Biomedicines): the weights are for academic researchers and non-profit "
    "entities who accepted the licence; sharing them or commercial use is outside the grant. Do not publish, "
    "upload or share this folder."
)
WEIGHTS_SITE = "https://chroma-weights.generatebiomedicines.com"
HINT = "give the backbone file the reference's save_model wrote (chroma_backbone_v1.0.pt from " + WEIGHTS_SITE + ")"
# The test vectors: two 24-residue systems (two chains; the second with a gap and padding), noised at two times.
VECTOR_CHAINS = ([1] * 12 + [2] * 12, [1] * 10 + [-1] * 2 + [2] * 8 + [0] * 4)
VECTOR_TIMES = (0.3, 0.7)
VECTOR_NOISE = 2.0  # Å
VECTOR_TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}  # Å; the same model re-run (BLAS and SVD rounding across CPUs)


def read_reference_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """``(init_kwargs, state_dict, other entry names)`` of a reference ``.pt``, read without running code."""
    if not path.is_file():
        what = "a folder" if path.is_dir() else "missing"
        raise WeightsError(f"{path} is {what}", HINT)
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise WeightsError(
            f"{path.name} is {size / 1024**3:.1f} GiB, more than any Chroma checkpoint "
            f"({MAX_CHECKPOINT_BYTES >> 30} GiB)",
            HINT,
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)  # never arbitrary unpickling
    except Exception as exc:
        raise WeightsError(
            f"{path.name} cannot be read safely: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "only plain tensors and containers are accepted (torch.load weights_only=True); " + HINT,
        ) from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path.name} holds a {type(data).__name__}, not the reference's checkpoint dict", HINT)
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        found = ", ".join(map(repr, list(data)[:8])) or "nothing"
        raise WeightsError(f"{path.name} has no {' or '.join(map(repr, missing))} (it holds {found})", HINT)
    init_kwargs, state = data["init_kwargs"], data["model_state_dict"]
    if not isinstance(init_kwargs, dict) or not all(isinstance(k, str) for k in init_kwargs):
        raise WeightsError(f"{path.name}: init_kwargs is a {type(init_kwargs).__name__}, not a dict of arguments", HINT)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise WeightsError(f"{path.name}: model_state_dict is not a dict of named tensors", HINT)
    return init_kwargs, state, sorted(str(k) for k in data if k not in REQUIRED)


def _json_value(name: str, value: Any) -> Any:
    """A config value as JSON (tuples -> lists); anything else in init_kwargs is not the reference's."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise WeightsError(f"init_kwargs {name!r} is {value}, not a finite number", HINT)
        return value
    if isinstance(value, list | tuple):
        return [_json_value(name, v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_value(name, v) for k, v in value.items()}
    raise WeightsError(f"init_kwargs {name!r} holds a {type(value).__name__}, not a plain value", HINT)


def architecture_config(init_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The saved init_kwargs as ``chroma.backbone``'s config: every key one ``GraphBackbone`` takes."""
    from biozoo_chroma.backbone.model import ChromaBackbone

    known = set(inspect.signature(ChromaBackbone.__init__).parameters) - {"self"}
    unknown = sorted(set(init_kwargs) - known)
    if unknown:
        raise WeightsError(
            f"init_kwargs has argument(s) the backbone model does not take: {', '.join(map(repr, unknown))}",
            "this is not a GraphBackbone checkpoint (the design model, chroma_design_v1.0.pt, is part 2 of issue "
            "10 and not convertible yet); " + HINT,
        )
    return {k: _json_value(k, v) for k, v in init_kwargs.items()}


def test_vector_inputs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A fixed noised batch (ideal helices plus seeded noise) for ``zoo verify``; independent of the weights."""
    from biozoo_chroma.backbone.ideal import alpha_helix

    C = torch.tensor(VECTOR_CHAINS, dtype=torch.long)
    noise = torch.randn(C.shape[0], C.shape[1], 4, 3, generator=torch.Generator().manual_seed(0))
    X = alpha_helix(C.shape[1]).expand(C.shape[0], -1, -1, -1) + VECTOR_NOISE * noise
    return {"X": X.contiguous(), "C": C, "t": torch.tensor(VECTOR_TIMES)}


def _model_id(source: Path, model_id: str | None) -> str:
    return model_id or f"chroma/{re.sub(r'[^a-z0-9_.-]+', '-', source.stem.lower()).strip('-.') or 'converted'}"


def convert_checkpoint(source: Path | str, output: Path | str, *, model_id: str | None = None) -> Path:
    """Convert a reference backbone checkpoint; the output folder appears whole or not at all."""
    from safetensors.torch import save_file

    from biozoo.manifest.io import parse_manifest, write_manifest
    from biozoo.nn.checks import ConfigError
    from biozoo.utils.atomic import atomic_directory
    from biozoo.utils.hashing import sha256_file
    from biozoo.weights import diff_keys
    from biozoo_chroma.backbone.model import ChromaBackbone
    from biozoo_chroma.graph.keys import convert_reference_state_dict

    source, output = Path(source), Path(output)
    init_kwargs, reference_state, others = read_reference_checkpoint(source)
    config = architecture_config(init_kwargs)
    try:
        state = convert_reference_state_dict(reference_state)
    except ValueError as exc:
        raise WeightsError(f"{source.name}: {exc}", HINT) from None
    try:
        model = ChromaBackbone(**config)
    except (ConfigError, TypeError, ValueError) as exc:
        raise WeightsError(f"{source.name}: its init_kwargs do not build the backbone model: {exc}", HINT) from None
    diff = diff_keys(
        {k: tuple(v.shape) for k, v in model.state_dict().items()}, {k: tuple(v.shape) for k, v in state.items()}
    )
    if not diff.ok:
        raise WeightsError(
            f"{source.name}'s model_state_dict does not match the model its init_kwargs describe "
            "(the reference would load it with strict=False and leave the gaps random):\n" + diff.render(),
            "use an unmodified checkpoint as save_model wrote it; " + HINT,
        )
    state = {k: v.contiguous() for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    inputs = test_vector_inputs(model)
    with torch.no_grad():
        expected = model(**inputs)
    model_id = _model_id(source, model_id)
    with atomic_directory(output) as staging:
        save_file(state, staging / "model.safetensors", metadata={"format": "pt", "converted_from": "generate-chroma"})
        vectors = {f"input.{k}": v for k, v in inputs.items()} | {f"output.{k}": v for k, v in expected.items()}
        save_file(vectors, staging / "test_vectors.safetensors")
        manifest = {
            "id": model_id,
            "description": f"Chroma backbone diffusion model converted from {source.name} by biozoo",
            "architecture": {"name": "chroma.backbone", "config": config},
            "weights": {
                "source": ".",
                "files": [{"path": "model.safetensors", "sha256": sha256_file(staging / "model.safetensors")}],
            },
            "test_vectors": {
                "file": "test_vectors.safetensors",
                "sha256": sha256_file(staging / "test_vectors.safetensors"),
                "tolerance": VECTOR_TOLERANCE,
                "provenance": "biozoo's chroma converter: denoise of ideal helices plus seeded noise, dithers off, "
                "computed with the converted weights right after conversion",
            },
            "license": LICENSE,
            "tags": ["chroma", "protein", "structure", "diffusion", "licence-restricted"],
            "metadata": {
                "license": LICENSE_TEXT,
                "license_url": WEIGHTS_SITE,
                "redistributable": False,
                "converted_from": source.name,
                "reference": "generate-chroma 1.0.0 (GraphBackbone, save_model format)",
                "ignored_entries": others,
            },
        }
        write_manifest(parse_manifest(manifest), staging)
    return output
