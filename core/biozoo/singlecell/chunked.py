"""Chunked ``embed`` and ``annotate``: bounded memory on one machine, resumable, and optionally on a Ray cluster.

``zoo embed --chunk-size N`` (also implied by a folder of shards, a zarr store or ``--engine ray``; ``zoo annotate``
alike) reads the input a chunk at a time (:class:`~biozoo.singlecell.stream.CellSource`), runs each chunk through
the model's own :class:`~biozoo.singlecell.pipeline.CellPipeline` (embeddings, or class probabilities: a
:class:`ChunkedOutput`), writes each chunk's result atomically into ``OUTPUT.parts/``
(:class:`~biozoo.singlecell.sharded.ShardedOutput`) and assembles the output when every chunk is there.

Two engines run the chunks, with the same per-chunk work (:func:`compute_chunk`), so their results are identical:

* ``local`` (default): this process, one chunk after another;
* ``ray``: Ray Data, one model replica per actor (``--actors``, ``--num-gpus-per-actor``), on a local cluster or
  the one at ``--address``. Actors write their chunks themselves (the output must be on storage every node sees),
  a dead actor is restarted and its chunk retried; a retried chunk replaces its file with the same content, so no
  cell is lost or duplicated. Actors load the model as the driver did: weights' dtype, attention processors and
  ``--autocast`` carry over. Ray is imported only for this engine (``pip install biozoo[ray]``).

Each chunk's preprocessing is seeded by (seed, shard, chunk) (:func:`~biozoo.singlecell.stream.chunk_seed`), so a
result depends on the seed and the chunk size, never on the engine, the worker or a resume. Models whose
preprocessing draws nothing (rank-value, autoregressive) give the same embeddings as an unchunked run; scGPT's
tie-breaking binning depends on the chunk size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from biozoo.errors import BiozooError
from biozoo.singlecell.errors import DataError
from biozoo.singlecell.sharded import ShardedOutput, save_chunk
from biozoo.singlecell.stream import CellSource, Chunk, chunk_seed

if TYPE_CHECKING:
    from biozoo.singlecell.pipeline import CellPipeline

DEFAULT_CHUNK_SIZE = 10_000
ENGINES = ("local", "ray")
#: fault injection for tests and drills: "CHUNK_NAME:MARKER_PATH" exits the worker once, at that chunk
FAULT_ENV = "BIOZOO_FAIL_ONCE_AT_CHUNK"


@dataclass(frozen=True)
class EngineSpec:
    """Where chunks run: ``local``, or ``ray`` with its cluster address, actor count and per-actor resources."""

    name: str = "local"
    address: str | None = None  #: a running cluster ("auto", "ray://host:10001"); None starts a local one
    actors: int | None = None  #: model replicas (default: one per GPU with num_gpus_per_actor, else 2)
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float | None = None  #: default 1; also each replica's torch threads

    @property
    def cpus_per_actor(self) -> float:
        return 1.0 if self.num_cpus_per_actor is None else self.num_cpus_per_actor

    def check(self) -> None:
        if self.name not in ENGINES:
            raise BiozooError(f"unknown engine {self.name!r}", "use --engine local or --engine ray")
        if self.name == "local" and (self.address or self.actors or self.num_gpus_per_actor or self.num_cpus_per_actor):
            raise BiozooError(
                "--address, --actors, --num-gpus-per-actor and --num-cpus-per-actor are for --engine ray",
                "add --engine ray, or leave them out",
            )
        if self.actors is not None and self.actors < 1:
            raise BiozooError(f"--actors {self.actors} must be at least 1", "e.g. --actors 4")


#: what each chunk computes, by task: the CellPipeline method
OUTPUTS = {"embed": "cell_embeddings", "annotate": "class_probabilities"}


@dataclass(frozen=True)
class ChunkedOutput:
    """What a chunked task computes per chunk (``task``: a key of :data:`OUTPUTS`) and where the assembly puts it:
    ``obsm[key]`` as it is (embeddings), or obs columns made by ``columns`` from the chunks' values in order
    (annotations). ``uns_key`` names the provenance entry, ``uns`` adds to it."""

    task: str
    key: str
    uns_key: str
    columns: Callable[[Iterator[np.ndarray]], dict[str, Any]] | None = None
    uns: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def embeddings(cls, key: str) -> ChunkedOutput:
        return cls("embed", key, key)

    @classmethod
    def annotations(cls, key: str, labels: list[str]) -> ChunkedOutput:
        from biozoo.singlecell.outputs import annotation_columns

        return cls("annotate", key, f"{key}_label", lambda values: annotation_columns(values, labels, key),
                   {"classes": labels})  # fmt: skip


@dataclass(frozen=True)
class ChunkJob:
    """What a worker needs to run chunks on its own: how to load the model and read the input, and the settings."""

    pipeline: Callable[[Any], CellPipeline]
    model_source: str
    dtype: str | None
    input_path: str
    chunks_folder: str
    var_column: str | None
    layer: str | None
    seed: int
    batch_size: int | None
    task: str = "embed"  #: a key of OUTPUTS
    processors: list[tuple[str, str | None, str | None]] = field(default_factory=list)  #: the driver's settings
    autocast: str | None = None  #: the dtype the driver ran the model under torch.autocast in, if any


def _fail_once(chunk: Chunk) -> None:
    spec = os.environ.get(FAULT_ENV, "")
    name, _, marker = spec.partition(":")
    if name == chunk.name and marker and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(17)  # the worker dies mid-run, as a killed node would


def compute_chunk(
    cells: CellPipeline, source: CellSource, chunk: Chunk, job: ChunkJob, devices: list[Any] | None = None
) -> tuple[np.ndarray, Any, list[str]]:
    """One chunk's values (embeddings or class probabilities), cell names and preprocessing steps: the whole of a
    worker's job for it."""
    adata = source.read(chunk)
    _fail_once(chunk)
    try:
        values, prepared = getattr(cells, OUTPUTS[job.task])(
            adata, batch_size=job.batch_size, var_column=job.var_column, layer=job.layer,
            seed=chunk_seed(job.seed, chunk), progress=False, devices=devices,
        )  # fmt: skip
    except BiozooError as exc:  # in an atlas, say where: which shard, which cells
        where = f"{source.shards[chunk.shard].path.name}, cells {chunk.start}-{chunk.stop}"
        raise BiozooError(f"{where}: {exc.message}", exc.hint) from exc
    return values, adata.obs_names, prepared.steps


def run_local(
    cells: CellPipeline, source: CellSource, pending: list[Chunk], out: ShardedOutput, job: ChunkJob,
    *, devices: list[Any] | None, progress: bool,
) -> dict[int, str]:  # fmt: skip
    """Every pending chunk in this process, in order. A shard that fails to read is skipped (returned by index);
    one whose data a check refuses is skipped too, and the first such error is raised once the other shards are
    done (as the Ray engine does), so one bad shard of an atlas does not hold up the rest."""
    from tqdm.auto import tqdm

    failed: dict[int, str] = {}
    errors: list[BiozooError] = []
    with tqdm(total=sum(c.cells for c in pending), unit="cell", desc="cells", disable=not progress) as bar:
        for chunk in pending:
            if chunk.shard in failed:
                continue
            try:
                adata_values = compute_chunk(cells, source, chunk, job, devices)
            except BiozooError as exc:  # the data is wrong (named by shard and cells): the other shards go on
                errors.append(exc)
                failed[chunk.shard] = exc.message
                continue
            except (OSError, KeyError, ValueError) as exc:  # this shard's file is damaged: the others go on
                failed[chunk.shard] = f"{type(exc).__name__}: {exc}"
                continue
            out.save(chunk, *adata_values)
            bar.update(chunk.cells)
    if errors:
        raise _first_error([(e.message, e.hint or "") for e in errors])
    return failed


def _first_error(errors: list[tuple[str, str]]) -> BiozooError:
    """The first chunk's data error (message, hint), saying how many more chunks failed."""
    message, hint = errors[0]
    more = f" ({len(errors) - 1} more chunk(s) failed too)" if len(errors) > 1 else ""
    return BiozooError(message + more, hint or None)


class _ChunkActor:
    """A Ray actor: one model replica that runs the chunks it is handed and writes each one's file."""

    def __init__(self, job: ChunkJob, num_threads: int) -> None:
        import torch

        import biozoo
        from biozoo.attention.selection import apply_processor_settings
        from biozoo.nn.precision import parse_dtype

        torch.set_num_threads(max(1, num_threads))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.job = job
        self.model = biozoo.load(job.model_source, device=self.device, dtype=job.dtype)
        apply_processor_settings(self.model, job.processors)
        self.autocast = parse_dtype(job.autocast)
        self.cells = job.pipeline(self.model)
        self.source = CellSource(job.input_path, var_column=job.var_column)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from biozoo.nn import precision

        rows: dict[str, list[Any]] = {"name": [], "cells": [], "error": [], "hint": []}
        for shard, number, start, stop in zip(batch["shard"], batch["number"], batch["start"], batch["stop"],
                                              strict=True):  # fmt: skip
            chunk = Chunk(int(shard), int(number), int(start), int(stop))
            error, hint = "", ""
            try:
                with precision.autocast(self.device, self.autocast):
                    values, obs_names, steps = compute_chunk(self.cells, self.source, chunk, self.job)
                save_chunk(Path(self.job.chunks_folder), chunk, values, obs_names, steps)
            except BiozooError as exc:  # returned, not raised: Ray would keep only its text, in a remote traceback
                error, hint = exc.message, exc.hint or ""
            for key, value in zip(rows, (chunk.name, chunk.cells, error, hint), strict=True):
                rows[key].append(value)
        return {key: np.asarray(values) for key, values in rows.items()}


def run_ray(pending: list[Chunk], job: ChunkJob, spec: EngineSpec, *, progress: bool) -> None:
    """Every pending chunk on a Ray cluster (Ray Data, an actor pool of model replicas); actors write the files."""
    try:
        import ray
    except ImportError:
        raise BiozooError(
            "--engine ray needs Ray, which is not installed", "pip install 'biozoo[ray]' (or use --engine local)"
        ) from None
    import logging

    from tqdm.auto import tqdm

    started = not ray.is_initialized()
    local = started and spec.address is None
    if started:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
        if local:  # a local cluster sized for the pool (Ray counts logical CPUs; the driver's reads need one more)
            import torch

            size = pool_size(spec, torch.cuda.device_count())
            options["num_cpus"] = max(1, int(size * spec.cpus_per_actor + 1))
        ray.init(address=spec.address, **options)
    # Ray Data's per-operator logs and bars are noise here (the bar below says it all); it resets its loggers when a
    # dataset runs, from this variable (a user's own setting wins)
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        resources = ray.cluster_resources()
        actors = pool_size(spec, resources.get("GPU", 0))
        check_resources(spec, actors, resources, joined=not local)
        items = [{"shard": c.shard, "number": c.number, "start": c.start, "stop": c.stop} for c in pending]
        dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
            _ChunkActor,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs={"job": job, "num_threads": int(max(1, spec.cpus_per_actor))},
            num_cpus=spec.cpus_per_actor,
            num_gpus=spec.num_gpus_per_actor,
        )  # Ray Data's actor defaults (max_restarts and max_task_retries -1): a dead actor is replaced and the
        # chunk it held runs again (the killed-worker test checks it)
        total = sum(c.cells for c in pending)
        with tqdm(total=total, unit="cell", desc="cells (ray)", disable=not progress) as bar:
            errors = []
            for row in dataset.iter_rows():
                if row["error"]:
                    errors.append((str(row["name"]), str(row["error"]), str(row["hint"])))
                else:
                    bar.update(int(row["cells"]))
        if errors:  # as the local engine: the first chunk's error, once the others are done
            raise _first_error([(message, hint) for _, message, hint in sorted(errors)])
    finally:
        if started:
            ray.shutdown()


def pool_size(spec: EngineSpec, gpus: float) -> int:
    """``--actors``, else one replica per ``--num-gpus-per-actor`` GPUs of the cluster, else 2 (CPU replicas)."""
    if spec.actors:
        return spec.actors
    if spec.num_gpus_per_actor:
        return max(1, int(gpus // spec.num_gpus_per_actor))
    return 2


def check_resources(spec: EngineSpec, actors: int, resources: dict[str, float], *, joined: bool) -> None:
    """Refuse a pool the cluster cannot hold (Ray would wait for it forever) before any actor starts. A joined
    cluster may be autoscaling, so there it is a warning: the run waits until nodes with the resources join."""
    import warnings

    from biozoo.errors import BiozooWarning

    for kind, each, flag in (("GPU", spec.num_gpus_per_actor, "--num-gpus-per-actor"),
                             ("CPU", spec.cpus_per_actor, "--num-cpus-per-actor")):  # fmt: skip
        need, have = actors * each, resources.get(kind, 0)
        if need <= have:
            continue
        message = f"{actors} actor(s) x {flag} {each:g} need {need:g} {kind}(s); the Ray cluster has {have:g}"
        if joined:
            warnings.warn(f"{message}: waiting for the cluster to grow", BiozooWarning, stacklevel=2)
            continue
        raise BiozooError(
            message, f"lower --actors or {flag}, or run on a cluster that has them (--address)"
            if kind == "GPU" else "lower --actors",
        )  # fmt: skip


def model_source(model: Any) -> str:
    """Where a worker loads the same model from: its registry id or hf:// ref (each node resolves and fetches it
    into its own cache, the pinned revision and hashes checked as here), or the absolute path of its folder."""
    from biozoo.api import zoo_record

    record = zoo_record(model)
    if record is None:
        raise BiozooError("a chunked run needs a model loaded with biozoo.load", "load it with biozoo.load(...)")
    return record.source or str(record.location.folder)


def run_in_chunks(
    model: Any,
    pipeline: Callable[[Any], CellPipeline],
    cells: CellPipeline,
    input_path: Path,
    output_path: Path,
    output: ChunkedOutput,
    *,
    chunk_size: int | None,
    parts: Path | None,
    resume: bool,
    restart: bool,
    engine: EngineSpec | None,
    per_shard: bool = False,
    batch_size: int | None,
    var_column: str | None,
    layer: str | None,
    seed: int,
    progress: bool,
    devices: list[Any] | None,
) -> tuple[Any, int, list[str]]:
    """A chunked task (see the module docstring) into the new ``.h5ad`` ``output_path`` (``per_shard``: a new folder
    with one ``.h5ad`` per input shard and an index): returns the obs written, the width of each cell's values
    (embedding dims or classes) and the preprocessing steps."""
    from biozoo.attention.selection import processor_settings
    from biozoo.nn.precision import current_autocast, dtype_name
    from biozoo.singlecell.outputs import provenance
    from biozoo.singlecell.sharded import parts_folder

    engine = engine or EngineSpec()
    engine.check()
    size = DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
    if size < 1:
        raise BiozooError(f"--chunk-size {size} must be at least 1", f"e.g. --chunk-size {DEFAULT_CHUNK_SIZE}")
    first = next(model.parameters())
    amp = current_autocast(first.device)
    source = CellSource(input_path, var_column=var_column)
    try:
        chunks = source.chunks(size)
        if not chunks and all(shard.error is None for shard in source.shards):
            raise DataError(
                f"the input {input_path.name} has 0 cells; nothing to {output.task}",
                "check the input, or the filter that removed every cell",
            )
        weights = model.zoo.manifest.weights
        dtype = str(first.dtype).removeprefix("torch.")
        processors = processor_settings(model)
        run = {
            "model": model.zoo.manifest.id,
            "weights_sha256": {f.path: f.sha256 for f in weights.files} if weights else {},
            "dtype": dtype,
            "settings": {"task": output.task, "chunk_size": size, "seed": seed, "var_column": var_column,
                         "layer": layer, "key": output.key, "autocast": dtype_name(amp),
                         "processors": sorted({name for _, *names in processors for name in names if name})},
            "input": source.fingerprint(),
        }  # fmt: skip
        out = ShardedOutput(parts or parts_folder(output_path), run, resume=resume, overwrite=restart)
        done = out.finished()
        pending = [c for c in chunks if c.name not in done]
        job = ChunkJob(pipeline, model_source(model), dtype, str(input_path), str(out.chunks_folder), var_column, layer,
                       seed, batch_size, output.task, processors, None if amp is None else dtype_name(amp))  # fmt: skip
        failed = {i: s.error for i, s in enumerate(source.shards) if s.error is not None}
        try:
            if engine.name == "ray":
                run_ray(pending, job, engine, progress=progress)
            else:
                failed |= run_local(cells, source, pending, out, job, devices=devices, progress=progress)
        except BaseException:
            if not out.finished():  # nothing to resume: leave no folder that a rerun would have to be told about
                out.remove()
            raise
        done = out.finished()
        if failed:
            names = "; ".join(f"{source.shards[i].path.name} ({why})" for i, why in sorted(failed.items()))
            raise BiozooError(
                f"could not read {len(failed)} shard(s): {names}. The other shards' {len(done)} chunk(s) are kept "
                f"in {out.folder}",
                "fix or remove the shard(s), then run the same command with --resume",
            )
        missing = [c.name for c in chunks if c.name not in done]
        if missing:
            raise BiozooError(
                f"{len(missing)} chunk(s) have no result ({', '.join(missing[:3])}); {len(done)} are kept in "
                f"{out.folder}",
                "run the same command with --resume",
            )
        steps = out.load(chunks[0])[2] if chunks else []
        uns = provenance(model, output.task, seed, steps) | output.uns | {
            "chunking": {"chunk_size": size, "chunks": len(chunks), "engine": engine.name,
                         "chunk_seed": "numpy SeedSequence([seed, shard, chunk])"},
            "input": [entry["name"] for entry in run["input"]],
        }  # fmt: skip
        obs, dims = out.assemble(source, chunks, output_path, {output.uns_key: uns}, per_shard=per_shard,
                                 obsm_key=None if output.columns else output.key, columns=output.columns)  # fmt: skip
    finally:
        source.close()
    out.remove()
    return obs, dims, steps
