"""The chroma plugin's tasks for the CLI: ``sample`` (``zoo sample``) writes sampled backbones as PDB/mmCIF files.

Each file says how it was made in its header (PDB ``REMARK 999`` lines, an mmCIF ``_biozoo_sample`` category):
the model and its weights' hash, the chain lengths, the sampler settings and the seed, so a file can be traced
and re-made. Nothing time-dependent is written: the same model, settings and seed give identical files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from biozoo.errors import InvalidArgumentError, ModelOutputError

FORMATS = ("pdb", "cif")
REMARK = "REMARK 999 "  # free-text remarks: PDB assigns no meaning to 999
HEADER_CATEGORY = "biozoo_sample"
MAX_SYMMETRY_NEIGHBORS = 5  # copies besides the AU that the denoiser sees (the rest follow by symmetry)
MAX_MOTIF_RESIDUES = 1500  # the conditioned prior is dense: 6000^2 float64 matrices, a cubic factorisation
PDB_RANGE = (-999.9995, 9999.9995)  # PDB's %8.3f coordinate columns hold -999.999 .. 9999.999


def provenance(model: torch.nn.Module, settings: dict[str, Any]) -> dict[str, str]:
    """What goes into every file's header, as ordered text fields."""
    from importlib.metadata import PackageNotFoundError, version

    from biozoo.api import zoo_record

    record = zoo_record(model)
    manifest = record.manifest if record is not None else None
    files = manifest.weights.files if manifest is not None and manifest.weights is not None else []
    try:
        plugin = version("biozoo-chroma")
    except PackageNotFoundError:
        plugin = "unknown"
    head = {
        "generator": f"biozoo zoo sample (biozoo-chroma {plugin})",
        "model": manifest.id if manifest is not None else type(model).__name__,
        "weights_sha256": ",".join(f.sha256 for f in files) or "-",
    }
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:  # e.g. --dtype bfloat16: the same seed gives other structures than in float32
        head["dtype"] = str(dtype).removeprefix("torch.")
    return head | {k: ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v) for k, v in settings.items()}


def _pdb_header(fields: dict[str, str]) -> str:
    """``REMARK 999 key: value`` lines within PDB's 80 columns; a longer value goes on indented continuation lines."""
    width, lines = 80 - len(REMARK), []
    for key, value in fields.items():
        text = f"{key}: {value}"
        lines.append(REMARK + text[:width])
        lines += [f"{REMARK}  {text[i : i + width - 2]}" for i in range(width, len(text), width - 2)]
    return "".join(line + "\n" for line in lines)


def read_header(path: Path | str) -> dict[str, str]:
    """The provenance fields of a file :func:`write_sample` wrote (PDB remarks or the mmCIF category)."""
    path = Path(path)
    if path.suffix == ".cif":
        import biotite.structure.io.pdbx as pdbx

        block = pdbx.CIFFile.read(str(path)).block
        if HEADER_CATEGORY not in block:
            return {}
        category = block[HEADER_CATEGORY]
        return {key: category[key].as_item() for key in category.keys()}  # noqa: SIM118 (not a dict)
    fields: dict[str, str] = {}
    key = None
    for line in path.read_text().splitlines():
        if not line.startswith(REMARK):
            continue
        text = line[len(REMARK) :]
        if text.startswith("  ") and key is not None:
            fields[key] += text[2:]
        else:
            key, _, value = text.partition(": ")
            fields[key] = value
    return fields


def check_coordinates(protein: Any, name: str, fmt: str) -> None:
    """A diverged sample (non-finite, or too large for PDB's columns) is an error, not a broken file."""
    X = protein.to_XCS()[0]
    if not bool(torch.isfinite(X).all()):
        raise ModelOutputError(
            f"{name}: the sampler diverged (non-finite coordinates)",
            "check the model (zoo verify MODEL); more --steps or a lower --langevin-factor integrate more stably",
        )
    low, high = (float(X.min()), float(X.max())) if X.numel() else (0.0, 0.0)
    if fmt == "pdb" and not PDB_RANGE[0] < low <= high < PDB_RANGE[1]:
        worst = low if low <= PDB_RANGE[0] else high
        raise ModelOutputError(
            f"{name}: a coordinate of {worst:.4g} Å does not fit PDB's columns (-999.999 to 9999.999)",
            "write mmCIF with --format cif; coordinates this large mean the sampler diverged (check the model)",
        )


def write_sample(protein: Any, path: Path, fields: dict[str, str]) -> None:
    """Write one sampled backbone with its provenance header (``path``'s suffix picks PDB or mmCIF)."""
    check_coordinates(protein, path.name, path.suffix.lstrip("."))
    if path.suffix == ".pdb":
        protein.to_PDB(path)
        path.write_text(_pdb_header(fields) + path.read_text())
        return
    import biotite.structure.io.pdbx as pdbx

    protein.to_CIF(path)
    cif = pdbx.CIFFile.read(str(path))
    block = cif.block
    block[HEADER_CATEGORY] = pdbx.CIFCategory({k: [v] for k, v in fields.items()})
    cif.write(str(path))


def _batches(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(size, total - start)


def sample(
    model: torch.nn.Module,
    output_dir: Path,
    *,
    chain_lengths: Sequence[int],
    samples: int = 1,
    steps: int = 500,
    seed: int = 0,
    fmt: str = "pdb",
    batch_size: int = 4,
    langevin_factor: float = 2.0,
    inverse_temperature: float = 10.0,
    integrate_func: str = "euler_maruyama",
    sde_func: str = "reverse_sde",
    progress: bool = True,
    symmetry: str | None = None,
    design: str | None = None,
    motif: Path | str | None = None,
    motif_residues: str | None = None,
) -> dict[str, Any]:
    """Sample ``samples`` backbones into ``output_dir/sample_000.<fmt>``, ...; batch ``b`` is seeded ``seed + b``.

    With ``design`` (``"potts"`` or ``"autoregressive"``) each backbone then gets a sequence and side chains from
    the model's design network (:func:`biozoo_chroma.design.api.design` at its defaults, seeded ``seed + i`` for
    sample ``i``; a symmetric assembly gets one sequence for all its copies, so it needs ``"potts"``). The design
    network is found before anything is sampled, so a backbone model without one fails at once.

    With ``symmetry`` (``"C3"``, ``"D2"``, ...) ``chain_lengths`` is the whole assembly: its asymmetric unit is
    sampled with a :class:`~biozoo_chroma.conditioners.SymmetryConditioner` (the denoiser sees up to 6 copies)
    and every file holds the full assembly.

    With ``motif`` (a structure file) and ``motif_residues`` (a selection such as ``"A:10-20"``) the system is
    the motif file's chains, residue numbers and chain ids (``chain_lengths`` is ignored): the selected residues
    keep their backbone exactly and their amino acids, everything else is sampled around them with a
    :class:`~biozoo_chroma.conditioners.SubstructureConditioner`; ``design`` then designs only the scaffold.

    The model's :meth:`~biozoo_chroma.backbone.model.ChromaBackbone.sample` checks every setting before
    anything runs; this checks what it adds (format, batch size) first.
    """
    from tqdm.auto import tqdm

    from biozoo_chroma.backbone.sampling import check_chain_lengths

    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown format {fmt!r}", f"use --format {' or --format '.join(FORMATS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size!r}", "e.g. --batch-size 4")
    scaffold = _motif_scaffold(model, motif, motif_residues, symmetry) if motif or motif_residues else None
    lengths = check_chain_lengths(list(chain_lengths) if scaffold is None else scaffold.chain_lengths)
    unit, conditioner = lengths, None if scaffold is None else scaffold.conditioner
    if symmetry is not None:
        from biozoo_chroma.conditioners import SymmetryConditioner, asymmetric_unit, group_order

        unit = asymmetric_unit(lengths, symmetry)
        conditioner = SymmetryConditioner(symmetry, min(group_order(symmetry) - 1, MAX_SYMMETRY_NEIGHBORS))
    designer = _sample_designer(model, design, symmetry)
    settings = {
        "chain_lengths": lengths, "samples": samples, "steps": steps, "seed": seed, "batch_size": batch_size,
        "langevin_factor": langevin_factor, "inverse_temperature": inverse_temperature,
        "integrator": integrate_func, "sde": sde_func, "tspan": "1.0,0.001",
    }  # fmt: skip
    if symmetry is not None:
        settings["symmetry"] = symmetry
    if design is not None:
        settings["design"] = design
    if scaffold is not None:
        settings |= {"motif": Path(str(motif)).name, "motif_residues": str(motif_residues)}
    fields = provenance(model, settings)
    output_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=steps * samples, desc="sampling", unit="step", leave=False, disable=not progress)
    written: list[str] = []
    try:
        for b, (start, size) in enumerate(_batches(samples, batch_size)):
            proteins = model.sample(
                samples=size, steps=steps, chain_lengths=unit, conditioner=conditioner, langevin_factor=langevin_factor,
                protein_init=None if scaffold is None else scaffold.protein,
                inverse_temperature=inverse_temperature, integrate_func=integrate_func, sde_func=sde_func,
                seed=seed + b, on_step=lambda _, n=size: bar.update(n),
            )  # fmt: skip
            proteins = [proteins] if size == 1 else proteins
            for i, protein in enumerate(proteins):
                name = f"sample_{start + i:03d}.{fmt}"
                header = fields | {"sample": str(start + i), "batch_seed": str(seed + b)}
                if scaffold is not None:
                    protein = scaffold.restore(protein)
                if designer is not None:
                    protein = designer(protein, seed + start + i, None if scaffold is None else ~scaffold.mask)
                write_sample(protein, output_dir / name, header)
                written.append(name)
    finally:
        bar.close()
    return {"files": written, "residues": sum(lengths), "chains": len(lengths), "provenance": fields}


def _sample_designer(
    model: torch.nn.Module, method: str | None, symmetry: str | None
) -> Callable[[Any, int], Any] | None:
    """``(protein, seed) -> designed protein`` for ``zoo sample --design``, checked before anything is sampled."""
    if method is None:
        return None
    from biozoo_chroma.design.api import METHODS
    from biozoo_chroma.design.api import design as design_protein

    if method not in METHODS:
        raise InvalidArgumentError(f"unknown design method {method!r}", "use --design potts or --design autoregressive")
    order = None
    if symmetry is not None:
        if method != "potts":
            raise InvalidArgumentError(
                "a symmetric assembly gets one sequence for all its copies, which only Potts design can do",
                "use --design potts with --symmetry",
            )
        from biozoo_chroma.conditioners import group_order

        order = group_order(symmetry)
    net = design_network(model)  # a backbone without a design network fails here, before sampling
    return lambda protein, seed, selection: design_protein(
        net, protein, design_method=method, design_selection=selection, potts_symmetry_order=order, seed=seed
    )


class _MotifScaffold:
    """``zoo sample --motif``: the motif file's system, its conditioner, and the sample put back in its frame."""

    def __init__(self, model: torch.nn.Module, motif: Path | str, residues: str) -> None:
        from biozoo_chroma.conditioners import SubstructureConditioner, motif_mask
        from biozoo_chroma.structures import Protein

        original = Protein(motif)
        if len(original) > MAX_MOTIF_RESIDUES:
            raise InvalidArgumentError(
                f"{Path(motif).name} has {len(original):,} residues; motif scaffolding handles at most "
                f"{MAX_MOTIF_RESIDUES:,} (its conditioned prior is a dense (4L)^2 matrix)",
                "cut the structure file down to the chains around the motif",
            )
        self.mask = motif_mask(original, residues)[0]  # checked on the file: every motif residue has a backbone
        X, C, S = original.to_XCS()
        self.S = torch.where(self.mask, S[0], torch.zeros_like(S[0]))  # the scaffold's residues are sampled
        self.ids = {"chain_ids": original.chain_ids, "residue_ids": original.residue_ids,
                    "insertion_codes": original.insertion_codes}  # fmt: skip
        # residues the file lacks (C < 0) are sampled like the rest of the scaffold
        self.protein = Protein.from_XCS(X, C.abs(), self.S[None], **self.ids)
        self.conditioner = SubstructureConditioner(self.protein, model, self.mask[None])
        self.chain_lengths = [int(n) for n in torch.bincount(C.abs()[0])[1:] if n > 0]

    def restore(self, sample: Any) -> Any:
        """The sampled backbone with the motif's chain ids, residue numbers and motif residue types."""
        from biozoo_chroma.structures import Protein

        X, C, _ = sample.to_XCS()
        return Protein.from_XCS(X, C, self.S[None], **self.ids)


def _motif_scaffold(
    model: torch.nn.Module, motif: Path | str | None, residues: str | None, symmetry: str | None
) -> _MotifScaffold:
    """The motif set-up, with its options checked together before anything is sampled."""
    if motif is None or not residues:
        given, missing = ("--motif", "--motif-residues") if motif is not None else ("--motif-residues", "--motif")
        raise InvalidArgumentError(
            f"{given} needs {missing}", 'give both, e.g. --motif in.pdb --motif-residues "A:10-20"'
        )
    if symmetry is not None:
        raise InvalidArgumentError(
            "motif scaffolding and symmetric assemblies cannot be combined yet", "leave out --symmetry or --motif"
        )
    return _MotifScaffold(model, motif, residues)


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: a non-finite score is written as null."""
    import math

    return value if math.isfinite(value) else None


def score(
    model: torch.nn.Module,
    paths: Sequence[Path | str],
    *,
    num_samples: int = 50,
    seed: int = 0,
    progress: bool = True,
    sequence: bool = False,
) -> dict[str, Any]:
    """Score each structure file alone with ``model.score_backbone`` (``zoo score``).

    Every file is read before any is scored, so an unreadable one fails fast. Each is scored in its own batch:
    in a shared one its ELBO would depend on the others (log|det R| counts the batch's chains). With ``sequence``
    the folder's design network scores sequences and side chains instead (:func:`score_sequences`).
    """
    if sequence:
        return score_sequences(model, paths, seed=seed)
    from tqdm.auto import tqdm

    from biozoo_chroma.losses import METRICS, check_num_samples_and_tspan
    from biozoo_chroma.structures import Protein

    check_num_samples_and_tspan(num_samples, (1e-4, 1.0))
    proteins = [Protein(path) for path in paths]
    head = provenance(model, {})
    result: dict[str, Any] = {
        "generator": head["generator"].replace("zoo sample", "zoo score"), "model": head["model"],
        "weights_sha256": head["weights_sha256"], "num_samples": num_samples, "seed": seed, "tspan": [1e-4, 1.0],
    }  # fmt: skip
    rows = []
    bar = tqdm(proteins, desc="scoring", unit="file", leave=False, disable=not progress)
    for path, protein in zip(paths, bar, strict=True):
        scores = model.score_backbone(protein, num_samples=num_samples, seed=seed)
        result.setdefault("t", scores["t"])
        rows.append({
            "file": str(path), "residues": len(protein), "chains": len(protein.chain_ids),
            "scores": {k: _finite(scores[k].score) for k in METRICS},
            "per_time": {k: [_finite(v) for v in scores[k].subcomponents] for k in METRICS},
        })  # fmt: skip
    result["structures"] = rows
    return result


# -- design, pack and sequence scores (issue 13): the design network, found from a design or backbone model ------

NO_DESIGN_HINT = (
    "give a chroma.design model (e.g. chroma/demo-design), or a folder converted with its design network: "
    "zoo convert chroma BACKBONE.pt DESIGN.pt -o OUT"
)


def design_network(model: torch.nn.Module) -> torch.nn.Module:
    """The design network: ``model`` itself, or the one a converted backbone folder holds in ``design/``."""
    from biozoo.api import load, zoo_record
    from biozoo_chroma.convert import design_folder
    from biozoo_chroma.design.network import ChromaDesign

    if isinstance(model, ChromaDesign):
        return model
    record = zoo_record(model)
    folder = design_folder(record.location.folder) if record is not None else None
    if folder is None:
        name = record.manifest.id if record is not None else type(model).__name__
        raise InvalidArgumentError(f"{name} is a backbone model without a design network", NO_DESIGN_HINT)
    weight = next(model.parameters())
    return load(folder, device=weight.device, dtype=weight.dtype)  # as the backbone was loaded (--device, --dtype)


def _sequence(protein: Any) -> str:
    from biozoo_chroma.constants import AA20

    return "".join(AA20[int(i)] for i in protein.to_XCS()[2][0])


def _write_structure(protein: Any, path: Path, net: torch.nn.Module, command: str, settings: dict[str, Any]) -> dict:
    """Write ``protein`` with its provenance header; what the CLI reports about it."""
    fields = provenance(net, settings)
    fields["generator"] = fields["generator"].replace("zoo sample", command)
    write_sample(protein, path, fields)
    return {"residues": len(protein), "chains": len(protein.chain_ids), "sequence": _sequence(protein),
            "provenance": fields}  # fmt: skip


def design(
    model: torch.nn.Module,
    input_path: Path,
    output_path: Path,
    /,
    *,
    method: str = "potts",
    selection: str | None = None,
    ban: Sequence[str] | None = None,
    temperature: float = 0.01,
    seed: int = 0,
    sweeps: int = 500,
    symmetry_order: int | None = None,
) -> dict[str, Any]:
    """``zoo design``: a designed sequence with packed side chains for the structure in ``input_path``
    (``symmetry_order`` n: one sequence for n identical copies of an asymmetric unit, Potts only)."""
    from biozoo_chroma.design.api import design as design_protein
    from biozoo_chroma.structures import Protein

    net = design_network(model)
    protein = Protein(input_path)
    designed = design_protein(
        net, protein, design_ban_S=list(ban) if ban else None, design_method=method, design_selection=selection,
        temperature_S=temperature, potts_mcmc_depth=sweeps, potts_symmetry_order=symmetry_order, seed=seed,
    )  # fmt: skip
    settings = {"input": Path(input_path).name, "method": method, "selection": selection or "all",
                "ban": ",".join(ban) if ban else "-", "temperature": temperature, "seed": seed}  # fmt: skip
    if method == "potts":
        settings["sweeps"] = sweeps
    if symmetry_order is not None:
        settings["symmetry_order"] = symmetry_order
    result = _write_structure(designed, Path(output_path), net, "zoo design", settings)
    before, after = _sequence(protein), result["sequence"]
    return result | {"output": str(output_path), "changed": sum(a != b for a, b in zip(before, after, strict=True))}


def pack(
    model: torch.nn.Module, input_path: Path, output_path: Path, /, *, temperature: float = 1e-3, seed: int = 0
) -> dict[str, Any]:
    """``zoo pack``: the structure in ``input_path`` with every side chain packed for its sequence."""
    from biozoo_chroma.design.api import pack as pack_protein
    from biozoo_chroma.structures import Protein

    net = design_network(model)
    packed = pack_protein(net, Protein(input_path), temperature_chi=temperature, seed=seed)
    settings = {"input": Path(input_path).name, "temperature_chi": temperature, "seed": seed}
    return _write_structure(packed, Path(output_path), net, "zoo pack", settings) | {"output": str(output_path)}


def score_sequences(model: torch.nn.Module, paths: Sequence[Path | str], *, seed: int = 0) -> dict[str, Any]:
    """``zoo score --sequence``: each file's sequence and side-chain scores under the design network, alone."""
    from biozoo_chroma.design.api import SEQUENCE_SCORES, score_sequence
    from biozoo_chroma.structures import Protein

    net = design_network(model)
    proteins = [Protein(path) for path in paths]
    head = provenance(net, {})
    result: dict[str, Any] = {
        "generator": head["generator"].replace("zoo sample", "zoo score --sequence"), "model": head["model"],
        "weights_sha256": head["weights_sha256"], "seed": seed, "t": 0.0, "metrics": list(SEQUENCE_SCORES),
    }  # fmt: skip
    rows = []
    for path, protein in zip(paths, proteins, strict=True):
        scores = score_sequence(net, protein, seed=seed)
        rows.append({
            "file": str(path), "residues": len(protein), "chains": len(protein.chain_ids),
            "scores": {k: _finite(float(scores[k])) for k in SEQUENCE_SCORES if k in scores},
        })  # fmt: skip
    result["structures"] = rows
    return result


def score_design(
    model: torch.nn.Module, paths: Sequence[Path | str], *, num_samples: int = 50, seed: int = 0, sequence: bool = False
) -> dict[str, Any]:
    """``zoo score`` on a design network: it scores sequences and side chains, so ``--sequence`` is required."""
    if not sequence:
        raise InvalidArgumentError(
            "a design network scores sequences and side chains, not backbones",
            "add --sequence, or give a backbone model to score backbones",
        )
    return score_sequences(model, paths, seed=seed)
