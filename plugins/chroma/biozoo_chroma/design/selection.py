"""Which residues design may change (``design_selection``), and which residue types it may not use (``ban_S``).

A selection is a boolean mask over the protein's XCS positions, or a string in the file's own numbering:

* ``"A"``: all of chain A;
* ``"A:10-20"``: chain A from residue 10 to residue 20, both ends included, in file order (so ``"H:52-53"``
  includes ``52A`` and ``52B`` when the file has them);
* ``"B:5,7,9-12"``: single residues and ranges; an end may carry an insertion code (``"H:52A-56"``);
* several parts separated by spaces or ``;`` (``"A:10-20 B"``), or given as a list.

Residue ends must exist in their chain: a range reaching past a chain's residues is an error naming the part, with
the chain's residue runs as the hint, never a silently smaller design. This is deliberately not the reference's
selection grammar (about 4,500 lines of it); it covers what design needs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from biozoo.errors import InvalidArgumentError
from biozoo_chroma.constants import AA20

if TYPE_CHECKING:
    from biozoo_chroma.structures import Protein

__all__ = ["SelectionError", "banned_states", "resolve_selection"]

_RESIDUE = r"-?\d+[A-Za-z]?"
_ITEM = re.compile(rf"^({_RESIDUE})(?:-({_RESIDUE}))?$")
_SYNTAX_HINT = 'write CHAIN or CHAIN:RANGES, e.g. "A", "A:10-20", "B:5,7,9-12", "H:52A-56"; separate parts with spaces'
_MAX_RUNS = 8


class SelectionError(InvalidArgumentError):
    """A design selection names something the protein does not have, or cannot be read."""


def _hint_runs(chain: str, labels: list[str], numbers: np.ndarray, codes: list[str]) -> str:
    """``chain A has residues 1-49, 51-120`` (consecutive numbers without insertion codes form a run)."""
    runs: list[list[int]] = []
    for i in range(len(labels)):
        if runs and not codes[i] and not codes[runs[-1][1]] and numbers[i] == numbers[runs[-1][1]] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    text = [labels[a] if a == b else f"{labels[a]}-{labels[b]}" for a, b in runs[:_MAX_RUNS]]
    more = f" and {len(runs) - _MAX_RUNS} more runs" if len(runs) > _MAX_RUNS else ""
    return f"chain {chain} has residues {', '.join(text)}{more}"


def _mask_shape_error(shape: tuple[int, ...], length: int, what: str) -> SelectionError:
    return SelectionError(
        f"the {what} mask has shape {list(shape)}, but the protein has {length} residues",
        f"pass a boolean mask of shape [{length}] or [1, {length}], or a selection string such as \"A:10-20\"",
    )


def _resolve_part(part: str, protein: Protein, chain_of: np.ndarray, mask: np.ndarray, what: str) -> None:
    """Set ``mask`` at the positions one part (``A`` or ``A:10-20,25``) names."""
    chain, sep, spec = part.partition(":")
    chain_ids = protein.chain_ids
    chains = [k for k, cid in enumerate(chain_ids) if cid == chain]
    if not chains:
        raise SelectionError(
            f"{what} {part!r}: chain {chain!r} does not exist in this protein",
            f"its chains are {', '.join(map(repr, chain_ids))}",
        )
    in_chain = np.isin(chain_of, chains)
    if not sep:
        mask |= in_chain
        return
    positions = np.flatnonzero(in_chain)
    numbers = protein.residue_ids[positions]
    codes = [protein.insertion_codes[i] for i in positions]
    labels = [f"{n}{c}" for n, c in zip(numbers, codes, strict=True)]
    where = {label: i for i, label in reversed(list(enumerate(labels)))}  # first occurrence wins
    items = spec.split(",")
    if not spec or not all(_ITEM.match(item.strip()) for item in items):
        raise SelectionError(f"{what} {part!r} cannot be read", _SYNTAX_HINT)
    for item in items:
        ends = _ITEM.match(item.strip()).groups()  # type: ignore[union-attr]
        found = []
        for end in filter(None, ends):
            if end not in where:
                raise SelectionError(
                    f"{what} {part!r}: residue {end} is not in chain {chain}",
                    _hint_runs(chain, labels, numbers, codes),
                )
            found.append(where[end])
        first, last = found[0], found[-1]
        if last < first:
            raise SelectionError(
                f"{what} {part!r}: the range {item.strip()} runs backwards ({ends[1]} comes before "
                f"{ends[0]} in chain {chain})",
                f"write the range from its first residue to its last, e.g. {ends[1]}-{ends[0]}",
            )
        mask[positions[first : last + 1]] = True


def resolve_selection(protein: Protein, selection: Any, what: str = "design selection") -> torch.Tensor:
    """The positions to design, ``[1, L]`` bool, from a boolean mask or a selection string (or list of them);
    errors call it ``what`` (``"motif residues"`` when it picks a motif)."""
    L = len(protein)
    if isinstance(selection, torch.Tensor | np.ndarray):
        mask = torch.as_tensor(selection)
        if mask.dtype != torch.bool:
            raise SelectionError(
                f"the {what} mask has dtype {mask.dtype}, not bool",
                "pass a boolean mask (True: design this residue), or a selection string such as \"A:10-20\"",
            )
        if tuple(mask.shape) not in ((L,), (1, L)):
            raise _mask_shape_error(tuple(mask.shape), L, what)
        return mask.reshape(1, L).cpu()
    if isinstance(selection, str):
        parts = selection.replace(";", " ").split()
    elif isinstance(selection, Sequence) and all(isinstance(p, str) for p in selection):
        parts = [p for s in selection for p in s.replace(";", " ").split()]
    else:
        raise SelectionError(
            f"a {what} must be a boolean mask or a string, got {type(selection).__name__}", _SYNTAX_HINT
        )
    if not parts:
        raise SelectionError(f"the {what} is empty", _SYNTAX_HINT)
    chain_of = protein.to_XCS()[1][0].abs().numpy() - 1
    mask = np.zeros(L, dtype=bool)
    for part in parts:
        _resolve_part(part, protein, chain_of, mask, what)
    return torch.from_numpy(mask).reshape(1, L)


def banned_states(ban_S: Sequence[str] | None, num_alphabet: int = len(AA20)) -> list[int]:
    """Indices into :data:`AA20` of the banned one-letter residues; refuses unknown letters and banning all."""
    if not ban_S:
        return []
    unknown = [a for a in ban_S if not (isinstance(a, str) and len(a) == 1 and a in AA20[:num_alphabet])]
    if unknown:
        raise InvalidArgumentError(
            f"unknown residues in the banned set: {', '.join(map(repr, unknown))}",
            f"ban one-letter codes from {AA20[:num_alphabet]} (design_ban_S)",
        )
    banned = sorted({AA20.index(a) for a in ban_S})
    if len(banned) >= num_alphabet:
        raise InvalidArgumentError(
            "every residue type is banned, so no sequence can be designed",
            "ban fewer residues (design_ban_S), e.g. ('C',) to avoid cysteines",
        )
    return banned
