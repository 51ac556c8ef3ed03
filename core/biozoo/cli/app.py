"""The ``zoo`` command line.

Start-up stays light: this module imports typer, rich and the registry only;
torch and model code are imported inside the commands that need them, so
``zoo --help`` and ``zoo list`` never pay for them (tested, and benchmarked in
``bench/cli_startup.py``). Every expected failure is a :class:`BiozooError`,
printed as its message and hint with exit code 1, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from biozoo.errors import BiozooError

app = typer.Typer(
    name="zoo",
    help="biozoo: load, verify and publish biological foundation models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cache_app = typer.Typer(help="Inspect and clean the model cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
hub_app = typer.Typer(help="A local Hub for air-gapped labs and CI (HF_ENDPOINT).", no_args_is_help=True)
app.add_typer(hub_app, name="hub")
manifest_app = typer.Typer(help="Maintain a model folder's manifest.", no_args_is_help=True)
app.add_typer(manifest_app, name="manifest")
plugin_app = typer.Typer(help="Start a plugin of your own.", no_args_is_help=True)
app.add_typer(plugin_app, name="plugin")


def _console(stderr: bool = False) -> Console:
    """A console whose width is the terminal's, ``COLUMNS`` if set, and unlimited for pipes and files.

    rich assumes 80 columns when it sees no terminal; output that is piped, captured or
    redirected must not be wrapped or truncated at a width nobody chose.
    """
    stream = sys.stderr if stderr else sys.stdout
    interactive = hasattr(stream, "isatty") and stream.isatty()
    columns = os.environ.get("COLUMNS", "")
    if interactive or columns.isdigit():
        return Console(stderr=stderr, soft_wrap=stderr)
    return Console(stderr=stderr, soft_wrap=stderr, width=_UNLIMITED)


_UNLIMITED = 1_000_000
out = _console()
err = _console(stderr=True)


class Kind(StrEnum):
    models = "models"
    components = "components"
    plugins = "plugins"
    processors = "processors"
    converters = "converters"


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _yes(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[red]no[/]"


@app.command("list")
def list_cmd(
    pattern: Annotated[str | None, typer.Argument(help="substring or glob over names")] = None,
    kind: Annotated[Kind, typer.Option("--kind", "-k", help="what to list")] = Kind.models,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List models (default), components, plugins or attention processors."""
    from biozoo import api
    from biozoo.registry import get_registry

    _warn_environment()
    if kind is Kind.models:
        rows = api.list_models(pattern)
        if as_json:
            _print_json(rows)
            return
        cells = [
            (
                row["id"],
                row["plugin"],
                ("yes" if row["available"] else "no") + (f" ({_short(row['reason'])})" if row["reason"] else ""),
                row["description"],
            )
            for row in rows
        ]
        _print_rows(("id", "plugin", "available", "description"), cells, style={2: _availability_style})
        return
    registry = get_registry()
    if kind is Kind.plugins:
        return plugins_cmd(as_json=as_json)
    if kind is Kind.components:  # every claimant of a name is a row of its own, its conflict noted
        rows = registry.listing(registry.components, lambda d: {"kind": d.kind.value, "description": d.description})
        columns: tuple[str, ...] = ("name", "kind", "plugin", "description")
    elif kind is Kind.converters:
        rows = registry.listing(registry.converters, lambda d: {"description": d.description})
        columns = ("name", "plugin", "description")
    else:
        rows = registry.listing(
            registry.processors, lambda d: {"priority": d.priority, "description": d.description}
        )
        columns = ("name", "plugin", "priority", "description")
    rows = [r for r in sorted(rows, key=lambda r: r["name"]) if _matches(r["name"], pattern)]
    if as_json:
        _print_json(rows)
        return
    if any(r["conflict"] for r in rows):
        columns = (*columns[:-1], "conflict", columns[-1])
    _print_rows(columns, [tuple(str(row[c]) for c in columns) for row in rows])


def _warn_environment() -> None:
    """Say on stderr when an environment variable silently hides plugins (e.g. a misspelt BIOZOO_PLUGINS)."""
    from biozoo.registry import get_registry

    for warning in get_registry().environment_warnings():
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


def _availability_style(value: str) -> str:
    return "green" if value == "yes" else "red"


def _print_rows(
    headers: tuple[str, ...],
    rows: list[tuple[str, ...]],
    style: dict[int, Any] | None = None,
    min_last: int = 20,
    shorten_last: bool = True,
) -> None:
    """A table when it fits the console; otherwise one block per row (first column alone, the rest indented).

    Every column but the last is shown in full, never truncated (ids are what users copy); the last
    one is shortened to fit (a description: ``--json`` and ``zoo info`` give it whole) or, with
    ``shorten_last=False``, wrapped.
    """
    style = style or {}
    widths = [max([len(r[i]) for r in rows] + [len(h)]) for i, h in enumerate(headers)]
    fixed = sum(widths[:-1]) + 3 * len(headers) + 1
    if fixed + min(widths[-1], min_last) <= out.width:
        table = Table()
        for i, (header, width) in enumerate(zip(headers, widths, strict=True)):
            last = i == len(headers) - 1
            if last:
                table.add_column(header, no_wrap=shorten_last, overflow="ellipsis", max_width=out.width - fixed)
            else:
                table.add_column(header, no_wrap=True, min_width=width)
        for row in rows:
            table.add_row(*(f"[{style[i](v)}]{escape(v)}[/]" if i in style else escape(v) for i, v in enumerate(row)))
        out.print(table)
        return
    for row in rows:
        out.print(f"[bold]{escape(row[0])}[/]", soft_wrap=True)
        rest = [f"{h}: {escape(v)}" for h, v in zip(headers[1:-1], row[1:-1], strict=True)]
        if rest:
            out.print("  " + "  ".join(rest), soft_wrap=True, highlight=False)
        if row[-1] and shorten_last:
            room = max(out.width - 2, 10)
            last = row[-1] if len(row[-1]) <= room else row[-1][: room - 1] + "…"
            out.print(f"  {escape(last)}", highlight=False, soft_wrap=True)
        elif row[-1]:
            out.print(Padding(Text(row[-1]), (0, 0, 0, 2), expand=False))


_SHORT_REASONS = {
    "zoo convert": "needs conversion",
    "not installed": "plugin missing",
    "is broken": "plugin broken",
    "is incompatible": "plugin incompatible",
    "is disabled": "plugin disabled",
    "claimed by": "name conflict",
    "unreadable manifest": "invalid manifest",
}


def _short(reason: str) -> str:
    """A few words for the table (``zoo info`` and ``--json`` give the whole reason)."""
    return next((short for key, short in _SHORT_REASONS.items() if key in reason), reason[:24])


def _matches(name: str, pattern: str | None) -> bool:
    import fnmatch

    if not pattern:
        return True
    return fnmatch.fnmatch(name, pattern if any(c in pattern for c in "*?[") else f"*{pattern}*")


@app.command("plugins")
def plugins_cmd(
    name: Annotated[str | None, typer.Argument(metavar="[NAME]", help="one plugin (default: all)")] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="import every declared target, assemble the plugin's models, run test vectors"),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Installed plugins: version, supported core range, status and why a plugin is broken."""
    from biozoo.registry import get_registry

    registry = get_registry()
    _warn_environment()
    if check:
        return _check_plugins(name, as_json)
    if name is not None and registry.plugin_status(name) is None:
        raise BiozooError(f"no plugin named {name!r} is installed", f"installed: {', '.join(registry.plugins)}")
    statuses = [s for s in registry.plugins.values() if name is None or s is registry.plugin_status(name)]
    warnings = {s.name: registry.plugin_warnings(s.name) for s in statuses}  # names another plugin claims too
    if as_json:
        _print_json([{**s.to_json(), "warnings": warnings[s.name]} for s in statuses])
        return
    rows = [
        (
            s.name,
            s.distribution,
            s.version,
            s.core_range or "-",
            s.status,
            "; ".join(([s.reason] if s.reason else []) + [f"warning: {w}" for w in warnings[s.name]]),
        )
        for s in statuses
    ]
    colour = {"ok": "green", "disabled": "yellow"}
    _print_rows(
        ("plugin", "distribution", "version", "core range", "status", "reason"),
        rows,
        style={4: lambda status: colour.get(status, "red")},
        min_last=30,
        shorten_last=False,
    )


def _check_plugins(name: str | None, as_json: bool) -> None:
    """``zoo plugins --check``: a row per check (imports torch and plugin code), non-zero exit on any failure."""
    from biozoo.plugins.check import check_plugins, failure

    reports = check_plugins(None if name is None else [name])
    if as_json:
        _print_json([r.to_json() for r in reports])
    else:
        colour = {"ok": "green", "skipped": "yellow"}
        _print_rows(
            ("plugin", "subject", "check", "status", "cause"),
            [(r.plugin, c.subject, c.check, c.status, c.cause) for r in reports for c in r.checks],
            style={3: lambda status: colour.get(status, "red")},
            min_last=30,
            shorten_last=False,
        )
    problem = failure(reports)
    if problem is not None:
        raise problem


@app.command("info")
def info_cmd(
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL", help="registry id, model folder, or hf://ORG/NAME@REV; or a component, e.g. core.mlm_head"
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a model's manifest and whether it can be loaded here, or a component's config, slots and parameters."""
    from biozoo import api

    if _is_component(model):
        _component_info(model, as_json)
        return
    try:
        data = api.info(model)
    except BiozooError as exc:
        close = _close_components(model)
        if close:  # a misspelt component name reads like a model path
            raise BiozooError(f"no model or component named {model!r}", f"did you mean {', '.join(close)}?") from None
        raise exc from None
    if as_json:
        _print_json(data)
        return
    import yaml

    manifest = data["manifest"]
    out.print(f"[bold]{escape(manifest['id'])}[/]  ({escape(data['origin'])})", soft_wrap=True)
    out.print("available: " + _yes(data["available"]))
    for problem in data["problems"]:
        out.print(f"  [red]{escape(problem)}[/]", soft_wrap=True)
    out.file.flush()
    # YAML wraps its own long strings; re-wrapping them at the terminal width would break the document
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, width=min(out.width, 100)))


def _is_component(name: str) -> bool:
    """A registered component's name (or former name), and not a folder of that name."""
    from biozoo.registry import get_registry

    if "/" in name or Path(name).exists():
        return False
    table = get_registry().components
    return name in table.claims or name in table.aliases


def _close_components(name: str) -> list[str]:
    import difflib

    from biozoo.registry import get_registry

    if "/" in name or "." not in name:
        return []
    return difflib.get_close_matches(name, get_registry().components.names(), n=3)


def _component_info(name: str, as_json: bool) -> None:
    """``zoo info COMPONENT``: what a plugin author needs to configure it and to map a checkpoint's keys to it."""
    from biozoo.components.describe import component_info

    data = component_info(name)
    if as_json:
        _print_json(data)
        return
    out.print(f"[bold]{escape(data['name'])}[/]  ({data['kind']}, {escape(data['distribution'])})", soft_wrap=True)
    for label in ("target", "description", "doc"):
        if data[label]:
            out.print(f"{label}: {escape(str(data[label]))}", soft_wrap=True)
    if data["aliases"]:
        out.print(f"former names: {escape(', '.join(data['aliases']))}", soft_wrap=True)
    out.print("config:")
    _print_rows(("argument", "type", "default"), [(c["name"], c["type"], c["default"]) for c in data["config"]])
    if data["slots"]:
        out.print("slots:")
        _print_rows(
            ("slot", "kind", "required"), [(n, s["kind"], _yes(s["required"])) for n, s in data["slots"].items()]
        )
    example = data["example"]
    if example is None:
        out.print("parameters: no installed model uses it, so its parameter names depend on the config")
        return
    where = f" (slot {example['slot']})" if example["slot"] else ""
    out.print(f"parameters in {example['model']}{where}: {example['count']}")
    _print_rows(("name", "shape"), [(k, "x".join(map(str, v)) or "scalar") for k, v in example["parameters"].items()])


@app.command("load")
def load_cmd(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="registry id, model folder, or hf://ORG/NAME@REV")],
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, mps")] = None,
    dtype: Annotated[
        str | None, typer.Option(help="float32/fp32, bfloat16/bf16, float16/fp16, float64 (default: as stored)")
    ] = None,
    processor: Annotated[str | None, typer.Option(help="attention processor for every layer")] = None,
) -> None:
    """Load a model and report parameters, dtype, device, time, peak memory and file origins."""
    from biozoo import api

    loaded = api.load(model, device=device, dtype=dtype, processor=processor)
    r = loaded.zoo.report
    out.print(f"[bold green]loaded[/] {r.model_id}  from {r.origin}")
    table = Table(show_header=False, box=None)
    table.add_row("parameters", f"{r.parameters:,}")
    table.add_row("dtype", r.dtype)
    table.add_row("device", r.device)
    table.add_row("load time", f"{r.seconds:.3f} s")
    table.add_row("peak RSS", f"{r.peak_rss_mb:.0f} MB")
    for name, origin in r.files.items():
        table.add_row(name, origin)
    out.print(table)


@app.command("verify")
def verify_cmd(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="registry id, model folder, or hf://ORG/NAME@REV")],
    processor: Annotated[str | None, typer.Option(help="attention processor to verify with")] = None,
) -> None:
    """Re-run the manifest's test vectors and compare within its tolerance."""
    from biozoo import api

    checks = api.verify(model, processor=processor)
    for c in checks:
        out.print(f"[green]ok[/] {c.name}: max |diff| {c.max_abs_diff:.3g}, {c.mismatched}/{c.numel} outside tolerance")
    out.print(f"[bold green]{model} reproduces its test vectors[/]")


@app.command("explain")
def explain_cmd(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="registry id, model folder, or hf://ORG/NAME@REV")],
    processor: Annotated[str | None, typer.Option(help="attention processor to request for every layer")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Which attention kernel each layer actually ran on the model's test vectors, and why."""
    from biozoo import api

    rows = api.explain_model(model, processor=processor)
    if as_json:
        _print_json(rows)
        return
    _print_rows(
        ("module", "requested", "ran", "why"),
        [(r["module"], r["requested"], r["ran"], r["reason"]) for r in rows],
        min_last=30,
        shorten_last=False,
    )


@app.command("publish")
def publish_cmd(
    folder: Annotated[Path, typer.Argument(help="model folder with manifest.yaml", exists=True, file_okay=False)],
    repo: Annotated[str, typer.Option("--repo", help="ORG/NAME on the Hub (HF_ENDPOINT selects the Hub)")],
    revision: Annotated[str | None, typer.Option(help="branch to commit to (default main)")] = None,
    private: Annotated[bool, typer.Option(help="create the repository as private")] = False,
    message: Annotated[str | None, typer.Option(help="commit message")] = None,
) -> None:
    """Upload a model folder with a generated model card; prints the commit to pin."""
    from biozoo import hub

    commit = hub.publish(folder, repo, revision=revision, private=private, message=message)
    out.print(f"[bold green]published[/] {repo} at commit {commit}")
    out.print(f"load it with: zoo load hf://{repo}@{commit}")
    sys.stdout.flush()


def _task(task: str, model: str, device: str | None, processor: str | None, dtype: str | None = None):
    """Load ``model`` (weights cast to ``dtype`` when given) and find the plugin function for ``task``."""
    from biozoo import api
    from biozoo.registry import get_registry

    api.parse_device(device)  # a bad --device fails before the model is fetched or loaded
    loaded = api.load(model, device=device, processor=processor, dtype=dtype)
    fn = get_registry().task(task, loaded.zoo.manifest.architecture.name)  # its signature checked (biozoo.tasks)
    return loaded, _checked_result(task, fn, loaded.zoo.manifest.architecture.name)


def _checked_result(task: str, fn: Any, architecture: str) -> Any:
    """``fn`` with its result checked against the task contract before the CLI reads it."""
    from biozoo.tasks import CONTRACTS

    contract = CONTRACTS[task]

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return contract.check_result(fn(*args, **kwargs), f"the {task} task of {architecture}")

    return run


def _precision(device: str | None, dtype: str | None, autocast: bool) -> contextlib.AbstractContextManager:
    """Check ``--device`` and ``--dtype`` before anything is loaded; the context ``--autocast`` asks for.

    ``--autocast`` runs the model calls under ``torch.autocast`` in the ``--dtype`` when it is a half
    type, else the device's half type (bfloat16 where supported); weights keep their dtype.
    """
    from biozoo import api
    from biozoo.nn import precision

    where = api.parse_device(device) or "cpu"  # unmoved weights stay where they were mapped: the CPU
    return precision.autocast(where, precision.autocast_dtype(where, api.parse_dtype(dtype), autocast))


def _training_precision(device: str | None, dtype: str | None, autocast: bool) -> dict[str, Any]:
    """``zoo finetune``'s ``dtype=`` option: the mixed-precision dtype (``--autocast``: the device's half type),
    checked before anything is loaded; empty when neither flag is given (the task's default)."""
    from biozoo import api
    from biozoo.nn import precision

    where = api.parse_device(device) or "cpu"
    chosen = precision.autocast_dtype(where, api.parse_dtype(dtype), autocast) if autocast else api.parse_dtype(dtype)
    if chosen is None:
        return {}
    precision.training_precision(chosen, chosen)  # float64 is refused here, not after loading
    return {"dtype": chosen}


def _check_input(source: Path) -> None:
    if not source.is_file():
        what = "a folder" if source.is_dir() else "missing"
        raise BiozooError(f"the input {source} is {what}", "give an existing .h5ad file as SOURCE")


def _check_h5ad_paths(source: Path | None, output: Path) -> None:
    """Refuse a bad input or output before the model is loaded: wrong suffix, output = input."""
    if source is not None:
        _check_input(source)
    if output.suffix != ".h5ad":
        raise BiozooError(f"the output {output} must end in .h5ad", "e.g. -o annotated.h5ad")
    if source is not None and output.resolve() == source.resolve():
        raise BiozooError(
            "the output would overwrite the input", "write to a new file with -o; the input is never modified"
        )


def _within(rule: str, test: Callable[[float], bool]) -> Callable[[float | None], float | None]:
    """An option callback: the value must be finite and pass ``test`` (click's ranges let NaN through)."""

    def check(value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and test(value)):
            raise _click_exceptions().BadParameter(f"{value} is not {rule}")
        return value

    return check


_positive = _within("a positive number", lambda v: v > 0)
_non_negative = _within("a number >= 0", lambda v: v >= 0)
_open_fraction = _within("between 0 and 1 (exclusive)", lambda v: 0 < v < 1)
_probability = _within("in (0, 1]", lambda v: 0 < v <= 1)


Model = Annotated[str, typer.Argument(metavar="MODEL", help="registry id, model folder, or hf://ORG/NAME@REV")]
Input = Annotated[Path, typer.Argument(metavar="SOURCE", help="input .h5ad file")]
VarColumn = Annotated[str | None, typer.Option(help="var column with gene names (default: the model's, or var_names)")]
Layer = Annotated[str | None, typer.Option(help="layer to read instead of X")]
Seed = Annotated[int, typer.Option(min=0, help="seed for binning ties and gene subsampling")]
BatchSize = Annotated[
    int | None,
    typer.Option(min=1, help="cells per batch (default: 64 on CPU; on a GPU up to 1024, at most 65,536 padded tokens)"),
]


class Engine(StrEnum):
    local = "local"
    ray = "ray"


Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N, mps")]
DType = Annotated[
    str | None,
    typer.Option(help="cast the weights: bfloat16, float16, float32 (bf16, fp16, fp32, float64; default: as stored)"),
]
Autocast = Annotated[
    bool,
    typer.Option(
        "--autocast", help="run under torch.autocast in the --dtype's half type or the device's (bfloat16 on CPU)"
    ),
]
Processor = Annotated[str | None, typer.Option(help="attention processor")]
Devices = Annotated[
    str | None,
    typer.Option(help="split the cells over several devices, e.g. cuda:0,cuda:1, or all (every visible GPU)"),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="replace the output if it exists")]
ChunkSize = Annotated[
    int | None,
    typer.Option(min=1, help="read and run this many cells at a time (memory stays flat; resumable)"),
]
Resume = Annotated[
    bool, typer.Option("--resume", help="continue a chunked run that was stopped (its OUTPUT.parts folder)")
]
EngineOption = Annotated[
    Engine,
    typer.Option("--engine", help="where chunks run: this process, or a Ray cluster (pip install 'biozoo[ray]')"),
]
Address = Annotated[
    str | None,
    typer.Option(help="--engine ray: the cluster to join (auto, ray://HOST:10001); default: a local one"),
]
Actors = Annotated[int | None, typer.Option(min=1, help="--engine ray: model replicas (default 2)")]
NumGpusPerActor = Annotated[
    float, typer.Option(min=0, help="--engine ray: GPUs each replica takes, e.g. 1 (default 0: CPU)")
]
PerShard = Annotated[
    bool,
    typer.Option("--per-shard", help="chunked runs: -o is a folder with one .h5ad per input shard and index.json"),
]
NumCpusPerActor = Annotated[
    float | None,
    typer.Option(callback=_positive, help="--engine ray: CPUs (and torch threads) each replica takes (default 1)"),
]


@app.command("embed")
def embed_cmd(
    model: Model,
    source: Input,
    output: Annotated[Path, typer.Option("--output", "-o", help="new .h5ad with the embeddings in obsm")],
    var_column: VarColumn = None,
    layer: Layer = None,
    batch_size: BatchSize = None,
    seed: Seed = 0,
    device: Device = None,
    dtype: DType = None,
    autocast: Autocast = False,
    processor: Processor = None,
    overwrite: Overwrite = False,
    key: Annotated[
        str | None,
        typer.Option(help="the obsm key to write (default: the plugin's, e.g. X_scGPT, X_autoregressive)"),
    ] = None,
    devices: Devices = None,
    chunk_size: ChunkSize = None,
    resume: Resume = False,
    engine: EngineOption = Engine.local,
    address: Address = None,
    actors: Actors = None,
    num_gpus_per_actor: NumGpusPerActor = 0.0,
    num_cpus_per_actor: NumCpusPerActor = None,
    per_shard: PerShard = False,
) -> None:
    """Cell embeddings into obsm, with provenance (model, weights hash, plugin, seed, precision) in uns.

    SOURCE may also be a folder of .h5ad shards or a zarr store. With --chunk-size (or such a SOURCE, or
    --engine ray) cells are read a chunk at a time, finished chunks are kept in OUTPUT.parts so that --resume
    continues a stopped run, and the output holds obs and the embeddings (no expression matrix)."""
    options: dict[str, Any] = {"batch_size": batch_size, "var_column": var_column, "layer": layer, "seed": seed}
    if key is not None:
        if not key.strip() or "/" in key:
            raise BiozooError(f"--key {key!r} is not usable as an obsm key", "e.g. --key X_scGPT_human")
        options["key"] = key
    if devices is not None:
        device, options["devices"] = _split_devices(device, devices)
    options |= _chunked_options(source, output, chunk_size, resume, overwrite, engine, address, actors,
                                num_gpus_per_actor, num_cpus_per_actor, per_shard)  # fmt: skip
    result = _cells_task("embed", model, source, output, overwrite, device, processor, options, dtype, autocast)
    out.print(
        f"[bold green]embedded[/] {result['cells']} cells ({result['dims']} dims) -> {escape(str(output))} "
        f"{escape(result['key'])}",
        soft_wrap=True,
    )
    _print_steps(result)


def _chunked_options(
    source: Path, output: Path, chunk_size: int | None, resume: bool, overwrite: bool, engine: Engine,
    address: str | None, actors: int | None, num_gpus_per_actor: float, num_cpus_per_actor: float | None,
    per_shard: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The task options of a chunked ``zoo embed`` or ``zoo annotate`` (none for an unchunked run), checked before
    anything is loaded. A run is chunked with --chunk-size, a folder of shards or a zarr store, or --engine ray."""
    from biozoo.singlecell.chunked import EngineSpec
    from biozoo.singlecell.sharded import parts_folder

    if chunk_size is None and not source.is_dir() and engine is Engine.local:
        if resume or per_shard or address is not None or actors or num_gpus_per_actor or num_cpus_per_actor:
            raise BiozooError(
                "--resume, --per-shard, --address, --actors, --num-gpus-per-actor and --num-cpus-per-actor are for "
                "chunked runs",
                "add --chunk-size N (or --engine ray), or leave them out",
            )
        return {}
    if per_shard and output.suffix == ".h5ad":
        raise BiozooError(
            f"with --per-shard, -o names a folder (one .h5ad per input shard goes in it), not {output.name}",
            f"e.g. -o {output.with_suffix('')}",
        )
    if source.is_dir() and output.resolve().is_relative_to(source.resolve()):
        raise BiozooError(
            f"the output {output} is inside the input folder {source}, where the next run would read it as a shard",
            "write the output outside SOURCE with -o",
        )
    spec = EngineSpec(engine.value, address, actors, num_gpus_per_actor, num_cpus_per_actor)
    spec.check()
    if engine is Engine.ray:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise BiozooError("--engine ray needs Ray, which is not installed", "pip install 'biozoo[ray]'")
    parts = parts_folder(output)
    if parts.exists() and not resume and not overwrite:
        raise BiozooError(
            f"a previous run left {parts}", "add --resume to continue it, or --overwrite to start over"
        )
    return {"chunk_size": chunk_size, "parts": parts, "resume": resume, "restart": overwrite and not resume,
            "engine": spec} | ({"per_shard": True} if per_shard else {})  # fmt: skip


def _split_devices(device: str | None, devices: str) -> tuple[str, list[Any]]:
    """``--devices`` checked before anything is loaded: the first device (where the model loads) and all."""
    from biozoo.singlecell.device import parse_devices

    if device is not None:
        raise BiozooError("--device and --devices were both given", "use --devices alone, e.g. --devices cuda:0,cuda:1")
    parsed = parse_devices(devices)
    return str(parsed[0]), parsed


def _cells_task(
    task: str,
    model: str,
    source: Path,
    output: Path,
    overwrite: bool,
    device: str | None,
    processor: str | None,
    options: dict[str, Any],
    dtype: str | None = None,
    autocast: bool = False,
) -> dict[str, Any]:
    """Check the paths and precision, then run ``task`` on the cells of ``source`` into a staged ``output``
    (published on success)."""
    from biozoo.tasks import CONTRACTS
    from biozoo.utils.atomic import staged_output

    chunked, per_shard = "chunk_size" in options, options.get("per_shard", False)
    if not per_shard:
        _check_h5ad_paths(None if chunked else source, output)
    if chunked and not source.exists():
        raise BiozooError(f"the input {source} is missing", "give an .h5ad file, a zarr store or a folder of shards")
    amp = _precision(device, dtype, autocast)
    needed = 0 if chunked else source.stat().st_size
    with staged_output(output, overwrite=overwrite, needed=needed, folder=per_shard, markers=("index.json",)) as stage:
        loaded, run = _task(task, model, device, processor, dtype)
        for keyword in ("chunk_size", "resume", "engine", "per_shard"):
            if keyword in options and not CONTRACTS[task].accepts(run, keyword):
                raise BiozooError(
                    f"the {task} task of {loaded.zoo.manifest.id} cannot run in chunks",
                    "leave out --chunk-size, --resume and --engine, and give one .h5ad file",
                )
        if "devices" in options and not CONTRACTS[task].accepts(run, "devices"):
            raise BiozooError(
                f"the {task} task of {loaded.zoo.manifest.id} cannot split cells over devices",
                "use --device with one device",
            )
        if "key" in options and not CONTRACTS[task].accepts(run, "key"):
            raise BiozooError(f"the {task} task of {loaded.zoo.manifest.id} cannot choose its key", "leave out --key")
        with amp:
            return run(loaded, source, stage, **options)


def _print_steps(result: dict[str, Any]) -> None:
    for step in result.get("steps", []):
        out.print(f"  {escape(step)}", soft_wrap=True)


@app.command("annotate")
def annotate_cmd(
    model: Model,
    source: Input,
    output: Annotated[Path, typer.Option("--output", "-o", help="new .h5ad with predicted labels in obs")],
    var_column: VarColumn = None,
    layer: Layer = None,
    batch_size: BatchSize = None,
    seed: Seed = 0,
    device: Device = None,
    dtype: DType = None,
    autocast: Autocast = False,
    processor: Processor = None,
    overwrite: Overwrite = False,
    key: Annotated[
        str | None,
        typer.Option(help="prefix of the obs columns (default: the model id, e.g. scgpt_cls -> scgpt_cls_label)"),
    ] = None,
    devices: Devices = None,
    chunk_size: ChunkSize = None,
    resume: Resume = False,
    engine: EngineOption = Engine.local,
    address: Address = None,
    actors: Actors = None,
    num_gpus_per_actor: NumGpusPerActor = 0.0,
    num_cpus_per_actor: NumCpusPerActor = None,
    per_shard: PerShard = False,
) -> None:
    """Predicted cell type and its confidence into obs (<model>_label, <model>_confidence).

    SOURCE may also be a folder of .h5ad shards or a zarr store; --chunk-size, --resume and --engine ray work as
    for zoo embed (the output then holds obs only, no expression matrix)."""
    options: dict[str, Any] = {"batch_size": batch_size, "var_column": var_column, "layer": layer, "seed": seed}
    if key is not None:
        if not key.strip() or "/" in key:
            raise BiozooError(f"--key {key!r} is not usable as an obs column prefix", "e.g. --key celltype_scgpt")
        options["key"] = key
    if devices is not None:
        device, options["devices"] = _split_devices(device, devices)
    options |= _chunked_options(source, output, chunk_size, resume, overwrite, engine, address, actors,
                                num_gpus_per_actor, num_cpus_per_actor, per_shard)  # fmt: skip
    result = _cells_task("annotate", model, source, output, overwrite, device, processor, options, dtype, autocast)
    out.print(
        f"[bold green]annotated[/] {result['cells']} cells -> {escape(str(output))} "
        f"{escape(result.get('key', ''))} (mean confidence {result['mean_confidence']:.2f})",
        soft_wrap=True,
    )
    _print_steps(result)
    _print_rows(
        ("label", "cells"), sorted(((k, str(v)) for k, v in result["labels"].items()), key=lambda kv: -int(kv[1]))
    )


@app.command("finetune")
def finetune_cmd(
    model: Model,
    source: Input,
    output: Annotated[Path, typer.Option("--output", "-o", help="new model folder to write")],
    label_column: Annotated[str, typer.Option("--label-column", "-l", help="obs column with the cell types")],
    epochs: Annotated[int, typer.Option(min=1, help="maximum epochs")] = 30,
    lr: Annotated[float, typer.Option(callback=_positive, help="learning rate (Adam)")] = 1e-4,
    val_fraction: Annotated[
        float,
        typer.Option(callback=_open_fraction, help="stratified validation share"),
    ] = 0.15,
    patience: Annotated[
        int, typer.Option(min=0, help="stop after this many epochs without a better validation loss")
    ] = 5,
    model_id: Annotated[str | None, typer.Option("--id", help="id for the new model, e.g. lab/pbmc-cls")] = None,
    var_column: VarColumn = None,
    layer: Layer = None,
    batch_size: Annotated[int, typer.Option(min=1, help="cells per training batch")] = 32,
    seed: Seed = 0,
    device: Device = None,
    dtype: Annotated[
        str | None,
        typer.Option(help="bfloat16 or float16: mixed precision on float32 weights; float32 (default): none"),
    ] = None,
    autocast: Annotated[
        bool, typer.Option("--autocast", help="mixed precision in the device's half type (bfloat16 on CPU)")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace the output model folder if it exists")
    ] = False,
) -> None:
    """Train a cell-type classifier on labelled cells; writes a publishable model folder."""
    from biozoo.utils.atomic import staged_output

    _check_input(source)
    precision = _training_precision(device, dtype, autocast)
    with staged_output(output, overwrite=overwrite, folder=True) as stage:
        loaded, finetune = _task("finetune", model, device, None)  # as stored: float32 master weights
        report = finetune(
            loaded,
            source,
            stage,
            label_column=label_column,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            val_fraction=val_fraction,
            patience=patience,
            seed=seed,
            var_column=var_column,
            layer=layer,
            model_id=model_id,
            **precision,
        )
    out.print(
        f"[bold green]fine-tuned[/] {report['epochs_run']} epochs (best {report['best_epoch']}), "
        f"validation accuracy {report['val_accuracy']:.3f}, macro-F1 {report['val_macro_f1']:.3f} -> "
        f"{escape(str(output))}",
        soft_wrap=True,
    )
    out.print(f"publish it with: zoo publish {escape(str(output))} --repo ORG/NAME", soft_wrap=True)


@app.command("generate")
def generate_cmd(
    model: Model,
    n_cells: Annotated[int, typer.Option("--n-cells", "-n", min=1, help="how many cells to sample")] = 100,
    output: Annotated[Path, typer.Option("--output", "-o", help="new .h5ad with the generated cells")] = Path(
        "generated.h5ad"
    ),
    max_length: Annotated[int | None, typer.Option(min=1, help="at most this many genes per cell")] = None,
    temperature: Annotated[float, typer.Option(callback=_non_negative, help="sampling temperature; 0 = greedy")] = 1.0,
    top_k: Annotated[int | None, typer.Option(min=1, help="sample among the k most likely genes only")] = None,
    top_p: Annotated[
        float | None,
        typer.Option(callback=_probability, help="nucleus sampling: smallest set with this probability"),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="seed of the sampler")] = 0,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="cells per batch (default: 64 on CPU, 1024 on a GPU)")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="recompute every prefix (slow; for checks)")] = False,
    compiled: Annotated[
        bool, typer.Option("--compile", help="torch.compile each decoding step (the first batch pays for it)")
    ] = False,
    device: Device = None,
    dtype: DType = None,
    autocast: Autocast = False,
    processor: Processor = None,
    overwrite: Overwrite = False,
) -> None:
    """Sample new cells from a generative model into an .h5ad (expression, bins, gene order, provenance)."""
    from biozoo.utils.atomic import staged_output

    _check_h5ad_paths(None, output)
    amp = _precision(device, dtype, autocast)
    with staged_output(output, overwrite=overwrite) as stage, amp:
        loaded, generate = _task("generate", model, device, processor, dtype)
        result = generate(
            loaded,
            stage,
            n_cells=n_cells,
            max_length=max_length,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size,
            use_cache=not no_cache,
            compile=compiled,
        )
    out.print(
        f"[bold green]generated[/] {result['cells']} cells ({result['genes_per_cell']:.0f} genes per cell on "
        f"average, {result['ended']} ended by the model) -> {escape(str(output))}",
        soft_wrap=True,
    )


class DesignMethod(StrEnum):
    potts = "potts"
    autoregressive = "autoregressive"


class StructureFormat(StrEnum):
    pdb = "pdb"
    cif = "cif"


# The sampler's names, known here so that a typo fails before the model (or its plugin) is loaded; the chroma
# plugin's tests check that they are the ones its diffusion process offers.
class Integrator(StrEnum):
    euler_maruyama = "euler_maruyama"
    heun = "heun"


class Sde(StrEnum):
    reverse_sde = "reverse_sde"
    ode = "ode"
    langevin = "langevin"


MAX_SAMPLE_RESIDUES = 10_000  # total over chains (the chroma plugin's MAX_RESIDUES)
SAMPLES_INDEX = "samples.json"  # what `zoo sample` writes beside the structures; marks the folder as its own


def _chain_list(value: str | None) -> list[int] | None:
    """``--chains 60,40`` -> [60, 40]: each a positive integer."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise _click_exceptions().BadParameter(f"{value!r} is not a comma-separated list of positive chain lengths")
    return [int(p) for p in parts]


def _check_chains(value: str | None) -> str | None:
    """An option callback: ``--chains`` must parse (the error names the flag)."""
    _chain_list(value)
    return value


def _sample_lengths(length: int | None, chains: str | None) -> list[int]:
    """The chain lengths from ``--length`` / ``--chains``, checked before any model is loaded."""
    lengths = _chain_list(chains) or [100 if length is None else length]
    if chains is not None and length is not None and length != sum(lengths):
        raise BiozooError(
            f"--length {length} does not match --chains {chains} ({sum(lengths)} residues)",
            "give --chains alone for a complex, or --length alone for one chain",
        )
    if sum(lengths) > MAX_SAMPLE_RESIDUES:
        raise BiozooError(
            f"{sum(lengths):,} residues in all is more than {MAX_SAMPLE_RESIDUES:,}",
            "sample smaller systems with --length / --chains (memory grows with the square of the length)",
        )
    return lengths


def _is_default(ctx: typer.Context, name: str) -> bool:
    """Whether the option ``name`` was left at its default (not given on the command line or by the environment).

    Compared by name: typer >= 0.28 ships its own copy of click, whose ``ParameterSource`` is not click's."""
    source = ctx.get_parameter_source(name)
    return source is None or source.name in ("DEFAULT", "DEFAULT_MAP")


def _motif_lengths(
    motif: Path | None, residues: str | None, length: int | None, chains: str | None, symmetry: str | None
) -> list[int]:
    """``--motif`` options checked together before any model is loaded (the system is the motif file's)."""
    if motif is None or not residues:
        given, missing = ("--motif", "--motif-residues") if motif is not None else ("--motif-residues", "--motif")
        raise BiozooError(f"{given} needs {missing}", 'give both, e.g. --motif in.pdb --motif-residues "A:10-20"')
    if length is not None or chains is not None:
        raise BiozooError(
            "--motif samples the motif file's own chains, so --length and --chains do not apply",
            "leave out --length/--chains (edit the structure file to change the chains)",
        )
    if symmetry is not None:
        raise BiozooError("--motif and --symmetry cannot be combined yet", "leave out --symmetry or --motif")
    _check_structures([motif])
    return []


# `zoo sample --motif`: the sampler settings the reference's tutorial uses for substructure conditioning. With the
# reverse SDE at its defaults the scaffold around a fixed motif drifts apart (generatebio/chroma issue #24); these
# take effect for the options the command line leaves at their defaults.
MOTIF_SAMPLER = {"sde_func": "langevin", "langevin_factor": 4.0, "inverse_temperature": 8.0}


@app.command("sample")
def sample_cmd(
    ctx: typer.Context,
    model: Model,
    output: Annotated[Path, typer.Option("--output", "-o", help="new folder for sample_000.pdb, ...")],
    length: Annotated[
        int | None, typer.Option(min=1, help=f"residues of one chain (default 100; at most {MAX_SAMPLE_RESIDUES:,})")
    ] = None,
    chains: Annotated[
        str | None,
        typer.Option(callback=_check_chains, metavar="N,N,...", help="chain lengths of a complex, e.g. 60,40"),
    ] = None,
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, max=10_000, help="structures to sample")] = 1,
    steps: Annotated[int, typer.Option(min=1, max=100_000, help="integration steps of the reverse SDE")] = 500,
    seed: Annotated[int, typer.Option(min=0, help="seed of the sampler (batch b uses seed + b)")] = 0,
    fmt: Annotated[StructureFormat, typer.Option("--format", help="file format")] = StructureFormat.pdb,
    langevin_factor: Annotated[
        float, typer.Option(callback=_non_negative, help="strength of the Langevin correction")
    ] = 2.0,
    inverse_temperature: Annotated[
        float, typer.Option(callback=_positive, help="higher: less diverse, more idealised structures")
    ] = 10.0,
    integrator: Annotated[Integrator, typer.Option(help="SDE integrator")] = Integrator.euler_maruyama,
    sde: Annotated[Sde, typer.Option(help="which reverse-time dynamics to integrate")] = Sde.reverse_sde,
    batch_size: Annotated[int, typer.Option(min=1, help="structures sampled together")] = 4,
    symmetry: Annotated[
        str | None,
        typer.Option(metavar="GROUP", help="symmetric assembly: C2, C3, ..., D2, ... (--chains is the whole assembly)"),
    ] = None,
    design: Annotated[
        DesignMethod | None,
        typer.Option(help="then design each sample's sequence and side chains with the model's design network"),
    ] = None,
    motif: Annotated[
        Path | None,
        typer.Option(
            metavar="STRUCTURE",
            help="scaffold a motif: sample this file's chains around --motif-residues (unless given: --sde langevin "
            "--langevin-factor 4 --inverse-temperature 8)",
        ),
    ] = None,
    motif_residues: Annotated[
        str | None,
        typer.Option(metavar="SELECTION", help='the residues of --motif kept exactly, e.g. "A:10-20" or "A:5-9,30"'),
    ] = None,
    device: Device = None,
    dtype: DType = None,
    overwrite: Overwrite = False,
) -> None:
    """Sample protein backbones from a generative structure model (Chroma) into PDB or mmCIF files.

    With --motif and --motif-residues the selected residues of a structure keep their backbone exactly and the
    rest of its chains is sampled around them (motif scaffolding)."""
    from biozoo.tasks import CONTRACTS
    from biozoo.utils.atomic import atomic_write_text, staged_output

    options: dict[str, Any] = {"symmetry": symmetry} if symmetry is not None else {}
    sampler = {"sde_func": sde.value, "langevin_factor": langevin_factor, "inverse_temperature": inverse_temperature}
    if motif is not None or motif_residues is not None:
        lengths = _motif_lengths(motif, motif_residues, length, chains, symmetry)
        options |= {"motif": motif, "motif_residues": motif_residues}
        sampler |= {key: value for key, value in MOTIF_SAMPLER.items() if _is_default(ctx, key.removesuffix("_func"))}
    else:
        lengths = _sample_lengths(length, chains)
    with staged_output(output, overwrite=overwrite, folder=True, markers=(SAMPLES_INDEX,)) as stage:
        loaded, run = _task("sample", model, device, None, dtype)
        if design is not None:
            options["design"] = design.value
        for flag, keyword, what in (("--symmetry", "symmetry", "sample symmetric assemblies"),
                                    ("--design", "design", "design sequences"),
                                    ("--motif", "motif", "scaffold motifs")):  # fmt: skip
            if keyword in options and not CONTRACTS["sample"].accepts(run, keyword):
                raise BiozooError(f"the sample task of {loaded.zoo.manifest.id} cannot {what}", f"leave out {flag}")
        result = run(
            loaded,
            stage,
            chain_lengths=lengths,
            samples=samples,
            steps=steps,
            seed=seed,
            fmt=fmt.value,
            batch_size=batch_size,
            integrate_func=integrator.value,
            **sampler,
            **options,
        )
        atomic_write_text(stage / SAMPLES_INDEX, json.dumps(result, indent=2) + "\n")
    out.print(
        f"[bold green]sampled[/] {len(result['files'])} structure(s) of {result['residues']} residues "
        f"({result['chains']} chain(s)) -> {escape(str(output))}",
        soft_wrap=True,
    )


MAX_SCORE_SAMPLES = 1000  # diffusion times per structure (the chroma plugin's losses.MAX_SAMPLES)
STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")  # optionally .gz (biozoo_chroma.Protein reads these)
SCORE_METRICS = ("elbo", "elbo_X", "global_mse", "fragment_mse", "pair_mse", "neighborhood_mse", "distance_mse",
                 "hb_local", "hb_nonlocal")  # fmt: skip


def _check_structures(paths: list[Path]) -> None:
    """Each input is an existing file with a structure suffix, checked before any model is loaded."""
    for path in paths:
        if not path.is_file():
            what = "a folder" if path.is_dir() else "missing"
            raise BiozooError(f"the input {path} is {what}", "give existing .pdb or .cif files (optionally .gz)")
        suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
        if not suffixes or suffixes[-1] not in STRUCTURE_SUFFIXES:
            raise BiozooError(
                f"{path} is not named as a structure file", f"give files ending in {', '.join(STRUCTURE_SUFFIXES)}"
            )


@app.command("score")
def score_cmd(
    model: Model,
    structures: Annotated[
        list[Path], typer.Argument(metavar="STRUCTURE...", help="PDB or mmCIF files (.pdb, .cif, optionally .gz)")
    ],
    num_samples: Annotated[
        int, typer.Option(min=1, max=MAX_SCORE_SAMPLES, help="diffusion times averaged over, per structure")
    ] = 50,
    seed: Annotated[int, typer.Option(min=0, help="seed of the noise")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the scores as JSON")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="also write the scores (per time too) to a .json file")
    ] = None,
    sequence: Annotated[
        bool, typer.Option("--sequence", help="score sequences and side chains with the design network instead")
    ] = False,
    device: Device = None,
    dtype: DType = None,
    overwrite: Overwrite = False,
) -> None:
    """Score protein backbones with a structure model (Chroma): ELBO, reconstruction MSEs, H-bond recovery.

    With --sequence: -log p of the sequence and side chains, side-chain RMSD and clashes (a design network)."""
    from biozoo.tasks import CONTRACTS
    from biozoo.utils.atomic import atomic_write_text, staged_output

    _check_structures(structures)
    if output is not None and output.suffix != ".json":
        raise BiozooError(f"the output {output} must end in .json", "e.g. -o scores.json")
    with contextlib.ExitStack() as stack:
        stage = stack.enter_context(staged_output(output, overwrite=overwrite)) if output is not None else None
        loaded, run = _task("score", model, device, None, dtype)
        options = {"sequence": True} if sequence else {}
        if options and not CONTRACTS["score"].accepts(run, "sequence"):
            raise BiozooError(f"the score task of {loaded.zoo.manifest.id} cannot score sequences",
                              "leave out --sequence")  # fmt: skip
        result = run(loaded, structures, num_samples=num_samples, seed=seed, **options)
        if stage is not None:
            atomic_write_text(stage, json.dumps(result, indent=2) + "\n")
    if as_json:
        _print_json(result)
    else:
        metrics = result.get("metrics", SCORE_METRICS)  # a task may name its own columns (--sequence does)
        rows = [
            (
                row["file"],
                *("-" if row["scores"].get(k) is None else f"{row['scores'][k]:.4g}" for k in metrics),
                f"{row['residues']} residues, {row['chains']} chain(s)",
            )
            for row in result["structures"]
        ]
        _print_rows(("structure", *metrics, "size"), rows)
    if output is not None:
        err.print(f"[bold green]scored[/] {len(result['structures'])} structure(s) -> {escape(str(output))}")


AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"  # one-letter codes design may ban (Chroma's alphabet)


def _ban_list(value: str | None) -> str | None:
    """An option callback: ``--ban C,M`` names known one-letter residues and leaves at least one type."""
    if value is None:
        return None
    letters = [p.strip().upper() for p in value.split(",") if p.strip()]
    unknown = [p for p in letters if len(p) != 1 or p not in AMINO_ACIDS]
    if unknown or not letters:
        raise _click_exceptions().BadParameter(f"{value!r} is not a comma-separated list of one-letter residues "
                                               f"from {AMINO_ACIDS}")  # fmt: skip
    if len(set(letters)) == len(AMINO_ACIDS):
        raise _click_exceptions().BadParameter("it bans every residue type, so nothing could be designed")
    return ",".join(letters)


def _structure_paths(source: Path, output: Path) -> None:
    """The input is a structure file and the output a new .pdb or .cif, checked before the model is loaded."""
    _check_structures([source])
    if output.suffix not in (".pdb", ".cif"):
        raise BiozooError(f"the output {output} must end in .pdb or .cif", "e.g. -o designed.pdb")
    if output.resolve() == source.resolve():
        raise BiozooError("the output would overwrite the input", "write to a new file with -o; the input is kept")


StructureIn = Annotated[
    Path, typer.Argument(metavar="STRUCTURE", help="PDB or mmCIF file (.pdb, .cif, optionally .gz)")
]
StructureOut = Annotated[Path, typer.Option("--output", "-o", help="new .pdb or .cif file")]
DesignModel = Annotated[
    str, typer.Argument(metavar="MODEL", help="a design network (chroma.design), or a converted folder holding one")
]


@app.command("design")
def design_cmd(
    model: DesignModel,
    source: StructureIn,
    output: StructureOut,
    method: Annotated[DesignMethod, typer.Option(help="Potts MCMC or autoregressive decoding")] = DesignMethod.potts,
    selection: Annotated[
        str | None, typer.Option(metavar="SEL", help='residues to design, e.g. "A:10-20 B" (default: all)')
    ] = None,
    ban: Annotated[str | None, typer.Option(callback=_ban_list, metavar="X,Y", help="residues never to use, e.g. C,M")]
    = None,
    temperature: Annotated[
        float, typer.Option(callback=_positive, help="sequence temperature (low: near the most likely sequence)")
    ] = 0.01,
    sweeps: Annotated[int, typer.Option(min=1, help="Potts MCMC sweeps")] = 500,
    symmetry_order: Annotated[
        int | None, typer.Option(min=1, help="one sequence for N identical copies (chains in N equal runs; potts)")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="seed of the design and packing draws")] = 0,
    device: Device = None,
    dtype: DType = None,
    overwrite: Overwrite = False,
) -> None:
    """Design a sequence for a protein structure and pack its side chains (Chroma's design network)."""
    from biozoo.tasks import CONTRACTS
    from biozoo.utils.atomic import staged_output

    _structure_paths(source, output)
    if symmetry_order is not None and method is not DesignMethod.potts:
        raise BiozooError("--symmetry-order works with Potts design only", "use --method potts, or leave it out")
    with staged_output(output, overwrite=overwrite) as stage:
        loaded, run = _task("design", model, device, None, dtype)
        options = {"symmetry_order": symmetry_order} if symmetry_order is not None else {}
        if options and not CONTRACTS["design"].accepts(run, "symmetry_order"):
            raise BiozooError(f"the design task of {loaded.zoo.manifest.id} cannot design symmetric sequences",
                              "leave out --symmetry-order")  # fmt: skip
        result = run(loaded, source, stage, method=method.value, selection=selection,
                     ban=ban.split(",") if ban else None, temperature=temperature, seed=seed, sweeps=sweeps,
                     **options)  # fmt: skip
    changed = f", {result['changed']} changed" if "changed" in result else ""
    out.print(f"[bold green]designed[/] {result['residues']} residues ({result['chains']} chain(s){changed}) -> "
              f"{escape(str(output))}", soft_wrap=True)  # fmt: skip
    out.print(result["sequence"], soft_wrap=True, markup=False)


@app.command("pack")
def pack_cmd(
    model: DesignModel,
    source: StructureIn,
    output: StructureOut,
    temperature: Annotated[
        float, typer.Option(callback=_positive, help="chi temperature (low: near the most likely rotamers)")
    ] = 1e-3,
    seed: Annotated[int, typer.Option(min=0, help="seed of the decoding order and chi draws")] = 0,
    device: Device = None,
    dtype: DType = None,
    overwrite: Overwrite = False,
) -> None:
    """Pack the side chains of a protein structure for its sequence (Chroma's design network)."""
    from biozoo.utils.atomic import staged_output

    _structure_paths(source, output)
    with staged_output(output, overwrite=overwrite) as stage:
        loaded, run = _task("pack", model, device, None, dtype)
        result = run(loaded, source, stage, temperature=temperature, seed=seed)
    out.print(f"[bold green]packed[/] {result['residues']} residues ({result['chains']} chain(s)) -> "
              f"{escape(str(output))}", soft_wrap=True)  # fmt: skip


@app.command("convert")
def convert_cmd(
    converter: Annotated[
        str, typer.Argument(metavar="CONVERTER", help="converter name, e.g. scgpt (`zoo list --kind converters`)")
    ],
    sources: Annotated[
        list[Path],
        typer.Argument(
            metavar="SOURCE...",
            help="the reference checkpoint (file or folder); some converters take more, e.g. chroma BACKBONE.pt "
            "DESIGN.pt",
            exists=True,
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="new biozoo model folder to create")],
    model_id: Annotated[str | None, typer.Option("--id", help="model id for the manifest, e.g. scgpt/human")] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace the output model folder if it exists")
    ] = False,
) -> None:
    """Convert a reference checkpoint into a biozoo model folder (safetensors + manifest)."""
    import inspect

    from biozoo.errors import InvalidArgumentError
    from biozoo.registry import get_registry
    from biozoo.utils.atomic import staged_output

    convert = get_registry().converter(converter)
    try:  # a converter takes (source, output, *more sources) positionally
        inspect.signature(convert).bind(sources[0], output, *sources[1:], model_id=model_id)
    except TypeError:
        raise InvalidArgumentError(
            f"converter {converter!r} does not take {len(sources)} checkpoints",
            "give the checkpoint(s) it converts (`zoo list --kind converters` describes them)",
        ) from None
    with staged_output(output, overwrite=overwrite, folder=True) as stage:
        convert(sources[0], stage, *sources[1:], model_id=model_id)
    named = " + ".join(escape(str(s)) for s in sources)
    out.print(f"[bold green]converted[/] {named} -> {escape(str(output))}", soft_wrap=True)
    out.print(f"check it with: zoo load {escape(str(output))}", soft_wrap=True)


@cache_app.command("ls")
def cache_ls(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Models in the Hugging Face cache (HF_HUB_CACHE), with sizes and commits."""
    from biozoo import cache

    rows = cache.list_cached()
    if as_json:
        _print_json(rows)
        return
    table = Table("repository", "commits", "size", "biozoo model", "path")
    for row in rows:
        table.add_row(
            row["repo"], ", ".join(c[:10] for c in row["commits"]), row["size"], _yes(row["biozoo"]), row["path"]
        )
    out.print(table)


@cache_app.command("rm")
def cache_rm(
    repo: Annotated[str, typer.Argument(help="ORG/NAME or ORG/NAME@COMMIT")],
) -> None:
    """Delete a cached repository (or one commit of it)."""
    from biozoo import cache

    freed = cache.remove(repo)
    out.print(f"removed {repo} ({freed})")


@hub_app.command("serve")
def hub_serve(
    root: Annotated[Path, typer.Option(help="folder holding the repositories (created if missing)")] = Path("zoo-hub"),
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port; 0 picks a free one")] = 8910,
    host: Annotated[str, typer.Option(help="address to listen on; 0.0.0.0 serves the whole network")] = "127.0.0.1",
    token: Annotated[
        str | None,
        typer.Option(envvar="BIOZOO_HUB_TOKEN", help="bearer token required for writes (prefer BIOZOO_HUB_TOKEN)"),
    ] = None,
    protect_reads: Annotated[bool, typer.Option("--protect-reads", help="require the token for reads too")] = False,
    max_upload_mb: Annotated[int, typer.Option(min=1, help="largest commit accepted, in MiB")] = 4096,
    quiet: Annotated[bool, typer.Option("--quiet", help="no access log on stderr")] = False,
) -> None:
    """Serve a Hugging Face Hub-compatible API from a folder: zoo publish / zoo load hf://... with HF_ENDPOINT."""
    import signal

    from biozoo.hub_server import HubServer

    server = HubServer(
        root, host, port, token, protect_reads=protect_reads, max_upload=max_upload_mb * 2**20,
        log=None if quiet else sys.stderr,
    )  # fmt: skip
    # `kill` stops it as cleanly as Ctrl-C; and Ctrl-C works even where the parent started it with SIGINT ignored
    # (a shell's background job: a server started from a script or CI could not be stopped with SIGINT before)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server.start()
    try:
        out.print(f"serving the repositories in {escape(str(root.resolve()))} at {server.url}", soft_wrap=True)
        out.print(f"export HF_ENDPOINT={server.url}", soft_wrap=True, highlight=False)
        if token:
            out.print("writes" + (" and reads" if protect_reads else "") + " need the token: export HF_TOKEN=...")
        elif host not in ("127.0.0.1", "localhost", "::1"):
            err.print(f"[yellow]warning:[/] no --token: anyone who can reach {host}:{server.port} can publish")
        out.print("Ctrl-C stops it")
        sys.stdout.flush()
        server.wait()
    except KeyboardInterrupt:
        server.stop()
        err.print(f"stopped; the repositories stay in {escape(str(root))}", soft_wrap=True)
        raise SystemExit(130) from None
    finally:
        server.stop()


@manifest_app.command("hash")
def manifest_hash(
    folder: Annotated[Path, typer.Argument(metavar="FOLDER", help="model folder with manifest.yaml")],
    check: Annotated[bool, typer.Option("--check", help="only report files that differ; exit 1 if any")] = False,
) -> None:
    """Set the sha256 and size of the weights and test vectors in a manifest (after re-training), then validate it."""
    from biozoo.manifest.rehash import refresh

    located, changed = refresh(folder, check=check)
    for h in changed:
        size = "" if h.size is None or h.size == h.actual_size else f", size {h.size} -> {h.actual_size}"
        verb = "differs" if check else "updated"
        out.print(f"{verb} {escape(h.path)}: sha256 {h.sha256[:12]} -> {h.actual_sha256[:12]}{size}", soft_wrap=True)
    if check and changed:
        raise BiozooError(
            f"{len(changed)} file(s) differ from what {located.path} says", f"run `zoo manifest hash {folder}`"
        )
    what = "up to date" if not changed else f"updated ({len(changed)} file(s))"
    out.print(f"[bold green]{escape(str(located.path))} is {what}[/]; {located.manifest.id} assembles", soft_wrap=True)


@plugin_app.command("new")
def plugin_new(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="plugin name: lower-case letters, digits and '_', e.g. gene_mini")
    ],
    folder: Annotated[Path | None, typer.Option("--dir", help="project folder to create (default: ./NAME)")] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace a project this command wrote for NAME")
    ] = False,
) -> None:
    """Write a new plugin project: pyproject, declarations, a model with weights and test vectors, tests, CI."""
    from biozoo.scaffold import create, spellings

    project = create(name, folder, overwrite=overwrite)
    names = spellings(name)
    out.print(f"[bold green]created[/] {escape(str(project))} ({names['dist']}, model {name}/tiny)", soft_wrap=True)
    where = escape(str(project))
    out.print(f"next: pip install -e {where} && zoo plugins --check {name} && pytest {where}", soft_wrap=True)


def _click_exceptions() -> Any:
    """click's exception classes: typer >= 0.28 vendors click as ``typer._click``, older typer uses click."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _fail(message: str, hint: str | None, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    if hint:
        err.print(f"[yellow]hint:[/] {escape(hint)}", highlight=False)
    raise SystemExit(code)


def _show_deprecations() -> None:
    """A deprecated name (a renamed model or component) or another :class:`~biozoo.errors.BiozooWarning` is a
    ``warning:`` line on stderr, not a Python warning with a file and line number; other warnings are shown as
    Python shows them."""
    import warnings

    from biozoo.errors import BiozooDeprecationWarning, BiozooWarning

    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, (BiozooDeprecationWarning, BiozooWarning)):
            err.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
        else:
            shown(message, category, *args, **kwargs)

    warnings.showwarning = show


def main(args: list[str] | None = None) -> None:
    """Entry point: run the app; every expected failure is an ``error:``/``hint:`` pair and a non-zero exit.

    Exit codes: 0 success, 1 a biozoo error (bad input, missing file, failed check), 2 a usage
    error (unknown option, value out of range), 130 interrupted. Tracebacks are for bugs only.
    """
    click = _click_exceptions()
    command = typer.main.get_command(app)
    _show_deprecations()
    try:
        code = command.main(args=args, prog_name="zoo", standalone_mode=False)
    except BiozooError as exc:
        _fail(exc.message, exc.hint, 1)
    except click.NoArgsIsHelpError:
        with contextlib.redirect_stdout(sys.stderr):
            command.main(args=["--help"], prog_name="zoo", standalone_mode=False)
        raise SystemExit(2) from None
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "zoo"
        _fail(exc.format_message(), f"see `{where} --help`", exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), None, exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _fail("interrupted", "nothing was written: outputs appear only when a command completes", 130)
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
