"""Tied parameters declared by a manifest (``tie: {alias: source}``): one Parameter under two names, stored once.

BERT-style models share the MLM decoder's weight with the word embeddings. The tie is data in the manifest rather
than code in each architecture, so any two parameters of the same shape can be tied without a new component.
Assembly makes the alias *the same* ``nn.Parameter`` as the source; the weights file holds the source only
(safetensors refuses tensors that share memory, and a second copy could silently disagree), and loading fills the
source and then re-points the alias at it. A file that also carries the alias is accepted only with equal values.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

import torch
from torch import nn

from biozoo.errors import AssemblyError, WeightsError


def _parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return dict(model.named_parameters(remove_duplicate=False))


def _unknown(where: str, name: str, model: nn.Module, params: Mapping[str, nn.Parameter]) -> AssemblyError:
    buffers = dict(model.named_buffers(remove_duplicate=False))
    if name in buffers:
        return AssemblyError(f"{where}: {name!r} is a buffer, not a parameter", "only parameters can be tied")
    close = difflib.get_close_matches(name, params, n=3)
    return AssemblyError(
        f"{where}: the model has no parameter {name!r}",
        (f"did you mean {', '.join(map(repr, close))}? " if close else "")
        + "tie names are the keys of the weights file (the model's state_dict), "
        "e.g. 'head.decoder.weight'",
    )


def tie_parameters(model: nn.Module, ties: Mapping[str, str]) -> None:
    """Make each alias the source's Parameter object; unknown names and shape/dtype mismatches name ``tie.ALIAS``."""
    params = _parameters(model)
    for alias, source in ties.items():
        where = f"tie.{alias}"
        for name in (alias, source):
            if name not in params:
                raise _unknown(where, name, model, params)
        a, s = params[alias], params[source]
        if a.shape != s.shape or a.dtype != s.dtype:
            raise AssemblyError(
                f"{where}: {alias} is {list(a.shape)} {a.dtype}, but {source} is {list(s.shape)} {s.dtype}; "
                "tied parameters must have the same shape and dtype",
                "tie parameters of equal shape (e.g. the MLM decoder weight [vocab, d_model] to the word "
                "embeddings), or make the components' sizes agree",
            )
        owner, _, leaf = alias.rpartition(".")
        setattr(model.get_submodule(owner), leaf, s)
        params[alias] = s


def drop_aliases(state: Mapping[str, torch.Tensor], ties: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """``state`` without the tied aliases, after checking any alias it carries equals its source."""
    out = dict(state)
    for alias, source in ties.items():
        if alias not in out:
            continue
        if source not in out:
            raise WeightsError(
                f"the weights hold {alias!r} but not {source!r}, which the manifest's tie makes its source",
                f"save tied weights under the source name {source!r} (biozoo.ties.savable_state does)",
            )
        value, want = out.pop(alias), out[source]
        if value.shape != want.shape or value.dtype != want.dtype or not torch.equal(value, want):
            raise WeightsError(
                f"the weights hold {alias!r} with values different from {source!r}, but the manifest ties them "
                "(one parameter)",
                f"remove 'tie.{alias}' from the manifest if they are separate parameters, or save the weights "
                f"without {alias!r}",
            )
    return out


def savable_state(model: nn.Module, ties: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """The model's state dict for a safetensors file: tied aliases left out, every tensor a contiguous CPU copy.

    Refuses a model whose tied names no longer share one Parameter (a copy would be saved as if it were the source).
    """
    state = model.state_dict()
    params = _parameters(model)
    for alias, source in ties.items():
        if alias in params and source in params and params[alias] is not params[source]:
            raise WeightsError(
                f"{alias!r} is tied to {source!r} in the manifest, but the model holds two different parameters",
                "tie them again (biozoo.ties.tie_parameters) before saving, or remove the tie from the manifest",
            )
    return {k: v.detach().cpu().contiguous() for k, v in state.items() if k not in ties}
