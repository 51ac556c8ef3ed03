"""The task contract: what ``zoo embed``, ``zoo annotate``, ... call in a plugin, and what they get back.

A plugin declares a task as data (``TaskDecl(task="embed", architecture=..., target="pkg.tasks:embed")``);
the function behind it is imported on first use. Each task the CLI runs has a contract here: the
arguments the CLI passes (positionally, then by keyword) and the keys of the result it reads. A
task's signature is checked when it is resolved (as assembly checks a component's config), so a
plugin written against an older contract fails with a message naming the missing argument instead of
a ``TypeError`` from deep inside the CLI; its result is checked before the CLI prints it.

The Protocols are the same contracts for type checkers and readers; :data:`CONTRACTS` is what is
enforced. Tasks a plugin invents (names not in :data:`CONTRACTS`) are called from Python only and
are not checked. This module imports neither torch nor any plugin.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypedDict

from biozoo.errors import PluginError

# -- results ------------------------------------------------------------------------------------------------------


class EmbedResult(TypedDict):
    """What ``embed`` returns: the cells embedded, the embedding width, where it was written, what was done."""

    cells: int
    dims: int
    key: str  #: where the embeddings are, as a user would index them: "obsm['X_scGPT']"
    steps: list[str]  #: the preprocessing steps, one line each, for the user and the provenance


class AnnotateResult(TypedDict):
    """What ``annotate`` returns: cells, cells per predicted label, the mean confidence, where and how."""

    cells: int
    labels: dict[str, int]
    mean_confidence: float
    key: str
    steps: list[str]


class FinetuneResult(TypedDict):
    """What ``finetune`` returns: a training report (these keys, and any more the plugin reports)."""

    epochs_run: int
    best_epoch: int
    val_accuracy: float
    val_macro_f1: float


class GenerateResult(TypedDict):
    """What ``generate`` returns: cells written, mean genes per cell, cells the model ended itself, the file."""

    cells: int
    genes_per_cell: float
    ended: int
    output: str


class SampleResult(TypedDict):
    """What ``sample`` returns (it becomes the output folder's index): files written and their provenance."""

    files: list[str]
    residues: int
    chains: int
    provenance: dict[str, str]


class ScoreResult(TypedDict):
    """What ``score`` returns: one row per structure (``file``, ``residues``, ``chains``, ``scores``)."""

    structures: list[dict[str, Any]]


class DesignResult(TypedDict):
    """What ``design`` and ``pack`` return: the structure written, its size, sequence and provenance header."""

    output: str
    residues: int
    chains: int
    sequence: str  #: one-letter codes of the written structure, in file order
    provenance: dict[str, str]


# -- the callables ------------------------------------------------------------------------------------------------


class EmbedTask(Protocol):
    """``zoo embed``: cell embeddings into ``obsm[key]`` of a new ``.h5ad`` at ``output_path``."""

    def __call__(
        self,
        model: Any,
        input_path: Path,
        output_path: Path,
        /,
        *,
        batch_size: int | None,
        var_column: str | None,
        layer: str | None,
        seed: int,
        key: str | None = None,
        devices: list[Any] | None = None,
        chunk_size: int | None = None,  #: read and embed this many cells at a time, resumably (``parts``)
        parts: Path | None = None,  #: where a chunked run keeps finished chunks (default: OUTPUT.parts)
        resume: bool = False,  #: continue the chunked run that left ``parts``
        restart: bool = False,  #: discard what a previous chunked run left in ``parts``
        engine: Any = None,  #: a :class:`biozoo.singlecell.chunked.EngineSpec` (``ray``: over a cluster)
        per_shard: bool = False,  #: a chunked run's output is a folder: one .h5ad per input shard, index.json
    ) -> EmbedResult: ...


class AnnotateTask(Protocol):
    """``zoo annotate``: predicted labels and confidences into ``obs`` of a new ``.h5ad``."""

    def __call__(
        self,
        model: Any,
        input_path: Path,
        output_path: Path,
        /,
        *,
        batch_size: int | None,
        var_column: str | None,
        layer: str | None,
        seed: int,
        key: str | None = None,  #: the obs column prefix (default: the model's id as an identifier)
        devices: list[Any] | None = None,
        chunk_size: int | None = None,  #: chunked, resumable, on Ray: as :class:`EmbedTask`
        parts: Path | None = None,
        resume: bool = False,
        restart: bool = False,
        engine: Any = None,
        per_shard: bool = False,
    ) -> AnnotateResult: ...


class FinetuneTask(Protocol):
    """``zoo finetune``: a new model folder trained on labelled cells."""

    def __call__(
        self,
        model: Any,
        input_path: Path,
        output_dir: Path,
        /,
        *,
        label_column: str,
        epochs: int,
        lr: float,
        batch_size: int,
        val_fraction: float,
        patience: int,
        seed: int,
        var_column: str | None,
        layer: str | None,
        model_id: str | None,
        dtype: Any = None,
        autocast: bool = False,
    ) -> FinetuneResult: ...


class GenerateTask(Protocol):
    """``zoo generate``: sampled cells into a new ``.h5ad``."""

    def __call__(
        self,
        model: Any,
        output_path: Path,
        /,
        *,
        n_cells: int,
        max_length: int | None,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        seed: int | None,
        batch_size: int | None,
        use_cache: bool,
        compile: bool,
    ) -> GenerateResult: ...


class SampleTask(Protocol):
    """``zoo sample``: sampled structures into files in ``output_dir``."""

    def __call__(
        self,
        model: Any,
        output_dir: Path,
        /,
        *,
        chain_lengths: Sequence[int],
        samples: int,
        steps: int,
        seed: int,
        fmt: str,
        batch_size: int,
        langevin_factor: float,
        inverse_temperature: float,
        integrate_func: str,
        sde_func: str,
        symmetry: str | None = None,  #: a point group ("C3", "D2"): chain_lengths is the whole assembly
        design: str | None = None,  #: then design each sample ("potts" or "autoregressive")
        motif: Path | None = None,  #: a structure file whose chains are sampled around ``motif_residues``
        motif_residues: str | None = None,  #: the residues of ``motif`` kept exactly, e.g. "A:10-20"
    ) -> SampleResult: ...


class ScoreTask(Protocol):
    """``zoo score``: scores of structure files (``--sequence``: of their sequences, by a design network)."""

    def __call__(
        self, model: Any, paths: Sequence[Path], /, *, num_samples: int, seed: int, sequence: bool = False
    ) -> ScoreResult: ...


class DesignTask(Protocol):
    """``zoo design``: the structure in ``input_path`` with a designed sequence and packed side chains."""

    def __call__(
        self,
        model: Any,
        input_path: Path,
        output_path: Path,
        /,
        *,
        method: str,
        selection: str | None,
        ban: Sequence[str] | None,
        temperature: float,
        seed: int,
        sweeps: int = 500,
        symmetry_order: int | None = None,  #: one sequence for this many identical copies (Potts design)
    ) -> DesignResult: ...


class PackTask(Protocol):
    """``zoo pack``: the structure in ``input_path`` with its side chains packed for its sequence."""

    def __call__(
        self, model: Any, input_path: Path, output_path: Path, /, *, temperature: float, seed: int
    ) -> DesignResult: ...


# -- what is enforced ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskContract:
    """How the CLI calls one task: the ``positional`` arguments (any names), then ``keywords`` (always) and ``optional``
    keywords (only when the user asks for them, e.g. ``--devices``); the result must hold ``result_keys``."""

    name: str
    positional: tuple[str, ...]
    keywords: tuple[str, ...]
    optional: tuple[str, ...] = ()
    result_keys: tuple[str, ...] = ()
    protocol: type | None = None

    def call_form(self) -> str:
        """The signature as docs and errors show it."""
        optional = [f"[{k}]" for k in self.optional]
        return f"{self.name}({', '.join(self.positional)}, *, {', '.join([*self.keywords, *optional])})"

    @property
    def n_positional(self) -> int:
        return len(self.positional)

    def missing(self, fn: Callable[..., Any]) -> list[str]:
        """How ``fn``'s signature breaks this contract, one phrase each (empty: it follows it)."""
        params = _parameters(fn)
        if params is None:  # a builtin or C callable: nothing to check against
            return []
        kinds = {p.kind for p in params}
        problems = []
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) < self.n_positional and inspect.Parameter.VAR_POSITIONAL not in kinds:
            problems.append(f"it takes fewer than {self.n_positional} positional arguments")
        problems += [f"it takes no keyword {k!r}" for k in self.keywords if not _takes(params, k, self.n_positional)]
        problems += [
            f"it requires {p.name!r}, which the CLI never passes"
            for p in params[self.n_positional :]
            if p.default is p.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in (*self.keywords, *self.optional)
        ]
        return problems

    def accepts(self, fn: Callable[..., Any], keyword: str) -> bool:
        """Whether ``fn`` takes ``keyword`` (e.g. the optional ``devices``, passed only when asked for)."""
        params = _parameters(fn)
        return params is None or _takes(params, keyword, self.n_positional)

    def check_result(self, result: Any, where: str) -> Any:
        """``result`` unchanged when it is a dict with every key the CLI reads; otherwise an error naming them."""
        if not isinstance(result, dict):
            raise PluginError(
                f"{where} returned {type(result).__name__}, not a dict",
                f"a {self.name} task returns a dict with {', '.join(self.result_keys)} (biozoo.tasks)",
            )
        absent = [k for k in self.result_keys if k not in result]
        if absent:
            raise PluginError(
                f"{where} returned a result without {', '.join(map(repr, absent))}",
                f"a {self.name} task returns a dict with {', '.join(self.result_keys)} (biozoo.tasks)",
            )
        return result


def contract_of(name: str, protocol: type) -> TaskContract:
    """A task's contract read from its Protocol, the one place it is written: positional-only parameters are
    passed positionally, keyword-only ones by name (with a default: only when the user asks), and the
    result must hold the required keys of the ``TypedDict`` the Protocol returns."""
    call = protocol.__call__  # type: ignore[operator]
    params = list(inspect.signature(call).parameters.values())[1:]  # without self
    result = typing.get_type_hints(call)["return"]
    return TaskContract(
        name,
        tuple(p.name for p in params if p.kind == p.POSITIONAL_ONLY),
        tuple(p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is p.empty),
        tuple(p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is not p.empty),
        tuple(sorted(result.__required_keys__, key=list(result.__annotations__).index)),
        protocol,
    )


#: every task the CLI runs, by name
CONTRACTS: dict[str, TaskContract] = {
    name: contract_of(name, protocol)
    for name, protocol in (
        ("embed", EmbedTask),
        ("annotate", AnnotateTask),
        ("finetune", FinetuneTask),
        ("generate", GenerateTask),
        ("sample", SampleTask),
        ("score", ScoreTask),
        ("design", DesignTask),
        ("pack", PackTask),
    )
}


def check_task(task: str, fn: Callable[..., Any], where: str) -> None:
    """Refuse a task function whose signature cannot take what the CLI passes (``where`` names it)."""
    contract = CONTRACTS.get(task)
    if contract is None:
        return
    if not callable(fn):
        raise PluginError(f"{where} is not callable", f"point the TaskDecl at a function: {contract.call_form()}")
    problems = contract.missing(fn)
    if problems:
        raise PluginError(
            f"{where} does not follow the {task!r} task contract: {'; '.join(problems)}",
            f"the contract is {contract.call_form()} -> {', '.join(contract.result_keys)} (biozoo.tasks, "
            "docs/plugins.md); update the plugin",
        )


def _parameters(fn: Callable[..., Any]) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None


def _takes(params: list[inspect.Parameter], keyword: str, n_positional: int) -> bool:
    """Whether a call can pass ``keyword`` by name after ``n_positional`` positional arguments."""
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return True
    return any(p.name == keyword and p.kind != p.POSITIONAL_ONLY for p in params[n_positional:])
