"""``zoo convert chroma BACKBONE.pt [DESIGN.pt] -o OUT``: licensed Chroma checkpoints -> one biozoo model folder.

The reference's ``save_model`` writes ``torch.save({"init_kwargs": ..., "model_state_dict": ..., **metadata})``.
This is the only place the chroma plugin reads a pickle, with ``torch.load(weights_only=True)``, which refuses
anything but tensors and plain containers (a pickle carrying code is refused without running it).

* ``init_kwargs`` become the manifest's ``architecture.config`` as they are (tuples become lists); a key that
  the model does not take is refused by name, and a design checkpoint given for the backbone (or the reverse)
  is named as such.
* The state dict goes through the key mapping (:func:`~biozoo_chroma.graph.keys.convert_reference_state_dict`
  for the backbone, :func:`~biozoo_chroma.design.keys.convert_design_state_dict` for the design network) and
  must then match the model key for key and shape for shape: the reference loads with ``strict=False`` and
  would silently leave a missing tensor at its random initial value; here a missing, unexpected or misshaped key
  is an error that names it. Every buffer is kept (the 2G3N centering means, the random Fourier matrices, the RBF
  centres).
* Two manifests, one folder: ``OUT`` is the backbone model (``chroma.backbone``, as before, so ``zoo sample`` and
  ``zoo score`` work on it and on folders converted without a design network), and the design network, when
  given, is a complete model folder of its own in ``OUT/design`` (``chroma.design``; :func:`design_folder`
  finds it). Each gets ``model.safetensors``, test vectors (a fixed input and this model's outputs) so ``zoo
  verify`` works on either, and a manifest that states the weights' licence: the Chroma Parameters License
  (academic and non-profit use; not redistributable). Never publish or share a converted folder.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

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
DESIGN_HINT = "give the design file the reference's save_model wrote (chroma_design_v1.0.pt from " + WEIGHTS_SITE + ")"
ORDER_HINT = "the backbone comes first, the design network second: zoo convert chroma chroma_backbone_v1.0.pt " \
    "chroma_design_v1.0.pt -o OUT"
DESIGN_SUBFOLDER = "design"  # OUT/design: the design network's model folder
# The test vectors: two 24-residue systems (two chains; the second with a gap and padding), noised at two times.
VECTOR_CHAINS = ([1] * 12 + [2] * 12, [1] * 10 + [-1] * 2 + [2] * 8 + [0] * 4)
VECTOR_TIMES = (0.3, 0.7)
VECTOR_NOISE = 2.0  # Å
VECTOR_TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}  # Å; the same model re-run (BLAS and SVD rounding across CPUs)


def read_reference_checkpoint(
    path: Path, hint: str = HINT
) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """``(init_kwargs, state_dict, other entry names)`` of a reference ``.pt``, read without running code."""
    if not path.is_file():
        what = "a folder" if path.is_dir() else "missing"
        raise WeightsError(f"{path} is {what}", hint)
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise WeightsError(
            f"{path.name} is {size / 1024**3:.1f} GiB, more than any Chroma checkpoint "
            f"({MAX_CHECKPOINT_BYTES >> 30} GiB)",
            hint,
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)  # never arbitrary unpickling
    except Exception as exc:
        raise WeightsError(
            f"{path.name} cannot be read safely: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "only plain tensors and containers are accepted (torch.load weights_only=True); " + hint,
        ) from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path.name} holds a {type(data).__name__}, not the reference's checkpoint dict", hint)
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        found = ", ".join(map(repr, list(data)[:8])) or "nothing"
        raise WeightsError(f"{path.name} has no {' or '.join(map(repr, missing))} (it holds {found})", hint)
    init_kwargs, state = data["init_kwargs"], data["model_state_dict"]
    if not isinstance(init_kwargs, dict) or not all(isinstance(k, str) for k in init_kwargs):
        raise WeightsError(f"{path.name}: init_kwargs is a {type(init_kwargs).__name__}, not a dict of arguments", hint)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise WeightsError(f"{path.name}: model_state_dict is not a dict of named tensors", hint)
    return init_kwargs, state, sorted(str(k) for k in data if k not in REQUIRED)


def _json_value(name: str, value: Any, hint: str) -> Any:
    """A config value as JSON (tuples -> lists); anything else in init_kwargs is not the reference's."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise WeightsError(f"init_kwargs {name!r} is {value}, not a finite number", hint)
        return value
    if isinstance(value, list | tuple):
        return [_json_value(name, v, hint) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_value(name, v, hint) for k, v in value.items()}
    raise WeightsError(f"init_kwargs {name!r} holds a {type(value).__name__}, not a plain value", hint)


class _Kind(NamedTuple):
    """What differs between the two checkpoints: the model class, its registry name, key mapping and wording."""

    name: str  # "backbone" | "design"
    architecture: str
    reference: str
    hint: str
    tag: str


BACKBONE = _Kind("backbone", "chroma.backbone", "GraphBackbone", HINT, "diffusion")
DESIGN = _Kind("design", "chroma.design", "GraphDesign", DESIGN_HINT, "design")


def _model_class(kind: _Kind) -> type[torch.nn.Module]:
    from biozoo_chroma.backbone.model import ChromaBackbone
    from biozoo_chroma.design.network import ChromaDesign

    return ChromaBackbone if kind is BACKBONE else ChromaDesign


def _arguments(kind: _Kind) -> set[str]:
    return set(inspect.signature(_model_class(kind).__init__).parameters) - {"self"}


def architecture_config(init_kwargs: Mapping[str, Any], kind: _Kind = BACKBONE) -> dict[str, Any]:
    """The saved init_kwargs as the architecture's config: every key the reference model takes.

    A checkpoint of the other model (a design network given for the backbone, or the reverse) is named as such.
    """
    unknown = sorted(set(init_kwargs) - _arguments(kind))
    if unknown:
        other = DESIGN if kind is BACKBONE else BACKBONE
        if set(init_kwargs) <= _arguments(other):
            raise WeightsError(
                f"this is a {other.name} network checkpoint ({other.reference}), given where the {kind.name} "
                f"model is expected (its init_kwargs have {', '.join(map(repr, unknown[:4]))})",
                ORDER_HINT,
            )
        raise WeightsError(
            f"init_kwargs has argument(s) the {kind.name} model does not take: {', '.join(map(repr, unknown))}",
            f"this is not a {kind.reference} checkpoint; " + kind.hint,
        )
    return {k: _json_value(k, v, kind.hint) for k, v in init_kwargs.items()}


def test_vector_inputs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A fixed noised batch (ideal helices plus seeded noise) for ``zoo verify``; independent of the weights.

    The design network also gets ideal side chains on that backbone, a seeded sequence and a decoding order, so
    its test vectors cover every head and the side-chain stage.
    """
    from biozoo_chroma.backbone.ideal import alpha_helix

    C = torch.tensor(VECTOR_CHAINS, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(C.shape[0], C.shape[1], 4, 3, generator=gen)
    X = (alpha_helix(C.shape[1]).expand(C.shape[0], -1, -1, -1) + VECTOR_NOISE * noise).contiguous()
    inputs = {"X": X, "C": C, "t": torch.tensor(VECTOR_TIMES)}
    if isinstance(model, _model_class(DESIGN)):
        from biozoo_chroma.sidechains import SideChainBuilder

        S = torch.randint(0, 20, C.shape, generator=gen)
        inputs["X"] = SideChainBuilder()(X, C, S)[0].contiguous()
        inputs["S"] = S
        inputs["permute_idx"] = torch.arange(C.shape[1]).expand(C.shape).contiguous()
    return inputs


def _model_id(source: Path, model_id: str | None) -> str:
    return model_id or f"chroma/{re.sub(r'[^a-z0-9_.-]+', '-', source.stem.lower()).strip('-.') or 'converted'}"


class _Converted(NamedTuple):
    kind: _Kind
    source: Path
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    model: torch.nn.Module
    others: list[str]


def _convert(source: Path, kind: _Kind) -> _Converted:
    """Read, map and strictly load one checkpoint; every failure is a :class:`WeightsError` naming the file."""
    from biozoo.nn.checks import ConfigError
    from biozoo.weights import diff_keys
    from biozoo_chroma.design.keys import convert_design_state_dict
    from biozoo_chroma.graph.keys import convert_reference_state_dict

    init_kwargs, reference_state, others = read_reference_checkpoint(source, kind.hint)
    try:
        config = architecture_config(init_kwargs, kind)
    except WeightsError as exc:
        raise WeightsError(f"{source.name}: {exc.message}", exc.hint) from None
    mapping = convert_reference_state_dict if kind is BACKBONE else convert_design_state_dict
    try:
        state = mapping(reference_state)
    except ValueError as exc:
        raise WeightsError(f"{source.name}: {exc}", kind.hint) from None
    try:
        model = _model_class(kind)(**config)
    except (ConfigError, TypeError, ValueError) as exc:
        raise WeightsError(
            f"{source.name}: its init_kwargs do not build the {kind.name} model: {exc}", kind.hint
        ) from None
    diff = diff_keys(
        {k: tuple(v.shape) for k, v in model.state_dict().items()}, {k: tuple(v.shape) for k, v in state.items()}
    )
    if not diff.ok:
        raise WeightsError(
            f"{source.name}'s model_state_dict does not match the model its init_kwargs describe "
            "(the reference would load it with strict=False and leave the gaps random):\n" + diff.render(),
            "use an unmodified checkpoint as save_model wrote it; " + kind.hint,
        )
    state = {k: v.contiguous() for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return _Converted(kind, source, config, state, model.eval(), others)


def _write_folder(folder: Path, part: _Converted, model_id: str) -> None:
    """``model.safetensors``, test vectors and the manifest of one converted model."""
    from safetensors.torch import save_file

    from biozoo.manifest.io import parse_manifest, write_manifest
    from biozoo.utils.hashing import sha256_file

    folder.mkdir(exist_ok=True)
    inputs = test_vector_inputs(part.model)
    with torch.no_grad():
        expected = part.model(**inputs)
    what = "backbone diffusion model" if part.kind is BACKBONE else "design network (sequence and side chains)"
    run = "denoise of ideal helices plus seeded noise, dithers off" if part.kind is BACKBONE else (
        "every head (Potts, marginals, autoregressive, teacher-forced chi) on ideal helices plus seeded noise with "
        "ideal side chains, a seeded sequence and the identity decoding order"
    )  # fmt: skip
    save_file(part.state, folder / "model.safetensors", metadata={"format": "pt", "converted_from": "generate-chroma"})
    vectors = {f"input.{k}": v for k, v in inputs.items()} | {f"output.{k}": v for k, v in expected.items()}
    save_file({k: v.contiguous() for k, v in vectors.items()}, folder / "test_vectors.safetensors")
    manifest = {
        "id": model_id,
        "description": f"Chroma {what} converted from {part.source.name} by biozoo",
        "architecture": {"name": part.kind.architecture, "config": part.config},
        "weights": {
            "source": ".",
            "files": [{"path": "model.safetensors", "sha256": sha256_file(folder / "model.safetensors")}],
        },
        "test_vectors": {
            "file": "test_vectors.safetensors",
            "sha256": sha256_file(folder / "test_vectors.safetensors"),
            "tolerance": VECTOR_TOLERANCE,
            "provenance": f"biozoo's chroma converter: {run}, computed with the converted weights right after "
            "conversion",
        },
        "license": LICENSE,
        "tags": ["chroma", "protein", "structure", part.kind.tag, "licence-restricted"],
        "metadata": {
            "license": LICENSE_TEXT,
            "license_url": WEIGHTS_SITE,
            "redistributable": False,
            "converted_from": part.source.name,
            "reference": f"generate-chroma 1.0.0 ({part.kind.reference}, save_model format)",
            "ignored_entries": part.others,
        },
    }
    write_manifest(parse_manifest(manifest), folder)


def convert_checkpoint(
    source: Path | str, output: Path | str, design: Path | str | None = None, *, model_id: str | None = None
) -> Path:
    """Convert a reference backbone checkpoint, and optionally a design one into ``output/design``; the output
    folder appears whole or not at all."""
    from biozoo.utils.atomic import atomic_directory

    source, output = Path(source), Path(output)
    parts = [_convert(source, BACKBONE)]
    if design is not None:
        parts.append(_convert(Path(design), DESIGN))
    model_id = _model_id(source, model_id)
    with atomic_directory(output) as staging:
        _write_folder(staging, parts[0], model_id)
        if design is not None:
            _write_folder(staging / DESIGN_SUBFOLDER, parts[1], f"{model_id}-design")
    return output


def design_folder(folder: Path | str) -> Path | None:
    """The design network's model folder inside a converted Chroma folder, or None when it was converted
    without one."""
    path = Path(folder) / DESIGN_SUBFOLDER
    from biozoo.manifest.io import MANIFEST_NAME

    return path if (path / MANIFEST_NAME).is_file() else None
