"""The Python API, mirrored one-to-one by the CLI.

Data flows one way: manifest -> registry -> assembly -> weights -> task -> output.
``list_models`` and ``info`` stay on the left of that line (no torch); ``load``
and ``verify`` walk all of it.
"""

from __future__ import annotations

import fnmatch
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from biozoo.errors import ManifestError, VerificationError
from biozoo.manifest.io import MANIFEST_NAME, LocatedManifest, read_manifest
from biozoo.registry import get_registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from biozoo.manifest.schema import Manifest


# -- listing (no torch) ----------------------------------------------------------------------------------------


def list_models(pattern: str | None = None) -> list[dict[str, Any]]:
    """Every named model: ``id``, ``plugin``, ``available`` (and why not), ``description``, ``license``, ``tags``."""
    registry = get_registry()
    rows = []
    for model_id in registry.models.names():
        claims = registry.models.claims[model_id]
        entry = claims[0].value
        if pattern and not fnmatch.fnmatch(model_id, pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"):
            continue
        owner = registry.models.owner(model_id) if len(claims) > 1 else None
        if owner is not None:  # a first-party model stays first-party
            entry = owner.value
        if len(claims) > 1 and owner is None:
            available, reason = False, "claimed by plugins " + " and ".join(c.plugin for c in claims)
        else:
            available, reason = registry.available(entry)
        plugins = sorted(entry.needs_plugins - {"core"})
        rows.append(
            {
                "id": model_id,
                "plugin": plugins[0] if len(plugins) == 1 else (",".join(plugins) or "core"),
                "available": available,
                "reason": reason,
                "description": entry.description,
                "license": entry.raw.get("license", "unknown"),
                "tags": entry.raw.get("tags", []),
                "manifest": str(entry.path),
            }
        )
    return rows


def resolve(source: str | Path, *, fetch_files: bool = True) -> tuple[LocatedManifest, str]:
    """A registry id, a local model folder / manifest, or ``hf://ORG/NAME@REV`` -> (manifest, origin).

    A registered id wins over a folder of the same relative name; write ``./org/name`` for the folder.
    With ``fetch_files=False`` a Hub model's manifest is fetched but not the files it names.
    """
    from biozoo import hub

    text = str(source)
    if text.startswith("hf://"):
        return hub.fetch_model(hub.HubRef.parse(text), files=fetch_files)
    registry = get_registry()
    if isinstance(source, str) and text in registry.models.claims:
        return registry.manifest(text), f"registry id {text}"
    path = Path(text).expanduser()
    if path.is_dir() and not (path / MANIFEST_NAME).exists():
        located = registry.read_foreign_folder(path)
        return located, f"local folder {path.resolve()} ({located.path.name}, read by a plugin's folder format)"
    if path.exists():
        return read_manifest(path), f"local folder {path.resolve() if path.is_dir() else path.resolve().parent}"
    if "/" in text and not text.startswith((".", "/")) and text.count("/") == 1:
        return registry.manifest(text), f"registry id {text}"
    raise ManifestError(
        f"{text!r} is neither a registered model id, an existing path, nor hf://ORG/NAME@REV",
        "`zoo list` shows the registered models",
    )


def info(source: str | Path) -> dict[str, Any]:
    """The validated manifest plus availability; no torch, no downloads of weights."""
    located, origin = resolve(source, fetch_files=False)
    registry = get_registry()
    manifest = located.manifest
    problems = [p for p in (registry.plugin_problem(n) for n in sorted(manifest.plugins)) if p]
    return {
        "origin": origin,
        "manifest": manifest.model_dump(mode="json", exclude_defaults=True),
        "available": not problems and manifest.weights is not None,
        "problems": problems,
    }


# -- loading ---------------------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What ``zoo load`` prints: where things came from and what loading cost."""

    model_id: str
    origin: str
    files: dict[str, str] = field(default_factory=dict)  # file -> where it came from
    parameters: int = 0
    dtype: str = ""
    device: str = ""
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    processors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ZooRecord:
    """What biozoo knows about a model it loaded, as ``model.zoo``: one typed record a task can rely on."""

    manifest: Manifest  #: the validated manifest
    location: LocatedManifest  #: resolves the manifest's other files: ``location.file(pre.files["vocabulary"])``
    folder: Path  #: the folder the weights were read from (a Hub cache folder for hf:// models)
    report: LoadReport  #: where each file came from and what loading cost (``zoo load`` prints it)
    source: str = ""  #: what to pass to :func:`load` for the same model elsewhere (a registry id, hf:// ref, folder)


def zoo_record(model: Any) -> ZooRecord | None:
    """``model.zoo`` when ``model`` was loaded by :func:`load`, else None (a model built by hand)."""
    record = getattr(model, "zoo", None)
    return record if isinstance(record, ZooRecord) else None


def _weights_root(located: LocatedManifest) -> tuple[Path, str]:
    """The folder holding the weights (downloading them from the Hub if the manifest points there)."""
    from biozoo import hub

    spec = located.manifest.weights
    assert spec is not None
    if spec.source.startswith("hf://"):
        checks = {f.path: hub.FileCheck(f.sha256, f.size) for f in spec.files}
        return hub.fetch_files(hub.HubRef.parse(spec.source), checks)
    folder = located.file(spec.source) if spec.source != "." else located.folder
    return folder, str(folder)


def _trusted(folder: Path) -> Path | None:
    """Where else ``folder``'s links may point: the blobs of the real Hub cache, for its snapshots only."""
    from biozoo import hub

    return hub.cache_repo_folder(folder / "x")


def load(
    source: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    processor: str | None = None,
    verify_hashes: bool = True,
) -> nn.Module:
    """Assemble a model and load its weights; ``model.zoo.report`` says what happened."""

    from biozoo.assembly import assemble
    from biozoo.attention.selection import set_processor
    from biozoo.manifest.schema import WeightFile
    from biozoo.utils.hashing import HashMemo
    from biozoo.weights import header_elements, load_into, read_state_dict, shard_paths, verify_file

    start = time.perf_counter()
    torch_dtype, device = parse_dtype(dtype), parse_device(device)  # bad settings fail before any download
    located, origin = resolve(source)
    manifest = located.manifest
    if manifest.weights is None:
        conv = manifest.conversion
        raise ManifestError(
            f"{manifest.id} has no weights yet: they must be converted from the official files",
            conv.instructions or f"zoo convert {conv.converter} DIR -o OUT" if conv else "see `zoo info`",
        )
    folder, files_origin = _weights_root(located)
    memo = HashMemo()
    report = LoadReport(manifest.id, origin)
    for item in manifest.weights.files:
        path = _inside(folder, item.path)
        if verify_hashes:  # and, the first time, that the weights hold no NaN/Inf
            verify_file(path, WeightFile(path=item.path, sha256=item.sha256, size=item.size), memo, finite=True)
        report.files[item.path] = f"{files_origin}" + (" (sha256 ok)" if verify_hashes else " (not verified)")
    shards = shard_paths(folder, manifest.weights, _trusted(folder))
    # the weights' headers bound the model: a manifest's sizes cannot make assembly run for minutes
    model = assemble(manifest, weights_hold=header_elements(shards))
    load_into(model, read_state_dict(shards), dtype=torch_dtype, device=device, ties=manifest.tie)
    model.eval()
    if processor:
        set_processor(model, processor)
    first = next(iter(model.parameters()), None)
    report.parameters = sum(p.numel() for p in model.parameters())
    report.dtype = str(first.dtype).removeprefix("torch.") if first is not None else "-"
    report.device = str(first.device) if first is not None else "-"
    report.seconds = time.perf_counter() - start
    report.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model.zoo = ZooRecord(manifest, located, folder, report, _portable(source, origin))
    return model


def _portable(source: str | Path, origin: str) -> str:
    """``source`` as another process (a Ray actor, maybe on another node) can load it: registry ids and hf:// refs
    as they are (each node resolves them itself), a local path made absolute."""
    text = str(source)
    if text.startswith("hf://") or origin.startswith("registry id"):
        return text
    return str(Path(text).expanduser().resolve())


def _inside(folder: Path, relative: str) -> Path:
    from biozoo.manifest.io import resolve_inside

    return resolve_inside(folder, relative, _trusted(folder))


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A dtype name (``bfloat16``/``bf16``, ``float16``/``fp16``, ``float32``/``fp32``, ``float64``) -> the dtype,
    or a clear error naming ``--dtype`` (checked before anything is loaded)."""
    from biozoo.nn.precision import parse_dtype as parse

    return parse(dtype)


def parse_device(device: str | torch.device | None) -> torch.device | None:
    """A device this torch can use, or a clear error naming ``--device`` (checked before anything is loaded)."""
    import torch

    from biozoo.errors import BiozooError

    if device is None or isinstance(device, torch.device):
        return device
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise BiozooError(
            f"unknown device {device!r}", "use --device cpu, cuda, cuda:N or mps (device= in Python)"
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise BiozooError(
                f"--device {device}: {why} (torch {torch.__version__})",
                "use --device cpu, or install a CUDA build of torch on a machine with a GPU",
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise BiozooError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible",
                "use --device cuda:0 .. cuda:N-1, or check CUDA_VISIBLE_DEVICES",
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise BiozooError(f"--device {device}: MPS is not available here", "use --device cpu")
    elif parsed.type not in {"cpu", "cuda", "mps"}:
        raise BiozooError(f"device {device!r} is not supported", "use --device cpu, cuda, cuda:N or mps")
    return parsed


def explain_model(source: str | Path, *, processor: str | None = None) -> list[dict[str, str]]:
    """Run the model's test vectors (if it has any), then report which kernel each attention layer ran and why."""
    import torch

    from biozoo.attention import explain

    model = load(source, processor=processor)
    if model.zoo.manifest.test_vectors is not None:
        inputs, _ = _test_vectors(model.zoo.location)
        with torch.no_grad():
            model(**inputs)
    return explain(model)


def _test_vectors(located: LocatedManifest) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The manifest's test inputs and expected outputs, from a file whose sha256 was checked first."""
    from biozoo.manifest.schema import WeightFile
    from biozoo.weights import read_safetensors, verify_file

    vectors = located.manifest.test_vectors
    assert vectors is not None
    path = located.file(vectors.file)
    verify_file(path, WeightFile(path=vectors.file, sha256=vectors.sha256))
    tensors = read_safetensors(path)
    inputs = {k.removeprefix("input."): v for k, v in tensors.items() if k.startswith("input.")}
    expected = {k.removeprefix("output."): v for k, v in tensors.items() if k.startswith("output.")}
    return inputs, expected


# -- verification ----------------------------------------------------------------------------------------------


@dataclass
class OutputCheck:
    name: str
    max_abs_diff: float
    mismatched: int
    allowed: int
    numel: int

    @property
    def ok(self) -> bool:
        return self.mismatched <= self.allowed


def verify(source: str | Path, *, processor: str | None = None) -> list[OutputCheck]:
    """Re-run the manifest's test vectors; raise :class:`VerificationError` if any output disagrees."""
    import torch

    located, _ = resolve(source)
    vectors = located.manifest.test_vectors
    if vectors is None:
        raise ManifestError(
            f"{located.manifest.id} has no test_vectors to verify", "add them to the manifest (docs/manifest.md)"
        )
    model = load(source, processor=processor)
    manifest = model.zoo.manifest
    inputs, expected = _test_vectors(located)
    if not expected:
        raise ManifestError(f"{vectors.file} holds no 'output.*' tensors")
    with torch.no_grad():
        outputs = model(**inputs)
    if isinstance(outputs, torch.Tensor):
        outputs = {"output": outputs}
    tol = vectors.tolerance
    checks = []
    for name, want in expected.items():
        if name not in outputs:
            raise VerificationError(f"the model returned no output {name!r} (it returned {', '.join(outputs)})")
        got = outputs[name].detach().to(torch.float64)
        want64 = want.to(torch.float64)
        if got.shape != want64.shape:
            raise VerificationError(f"output {name!r} has shape {list(got.shape)}, expected {list(want64.shape)}")
        bad = ~((got - want64).abs() <= tol.atol + tol.rtol * want64.abs())  # NaN anywhere counts as a mismatch
        checks.append(
            OutputCheck(
                name,
                float((got - want64).abs().max()) if got.numel() else 0.0,
                int(bad.sum()),
                int(tol.mismatched_per_million * got.numel() / 1e6),
                got.numel(),
            )
        )
    failed = [c for c in checks if not c.ok]
    if failed:
        detail = "; ".join(
            f"{c.name}: {c.mismatched} of {c.numel} elements disagree (max |diff| {c.max_abs_diff:.3g})" for c in failed
        )
        raise VerificationError(
            f"{manifest.id} does not reproduce its test vectors: {detail}",
            f"tolerance is atol={tol.atol}, rtol={tol.rtol}; check the weights and the installed plugin versions",
        )
    return checks
