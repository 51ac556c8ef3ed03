"""Gene vocabulary in scGPT's ``vocab.json`` format (a JSON object token -> id).

scGPT's ``GeneVocab.from_file`` inserts tokens sorted by id, which only works when the ids
are exactly ``0..n-1``; we refuse anything else up front instead of building a silently
different table. Checkpoints ship the vocabulary without some specials, and the reference
appends the missing ``<pad>``, ``<cls>``, ``<eoc>`` at the end, so ``with_specials`` does too:
the embedding matrix rows depend on those ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from biozoo.singlecell.errors import DataError
from biozoo.utils.atomic import atomic_write_text

SCGPT_SPECIALS: tuple[str, ...] = ("<pad>", "<cls>", "<eoc>")


class GeneVocabulary:
    """An immutable token -> id table with contiguous ids ``0..len-1``."""

    __slots__ = ("_ids", "_tokens")

    def __init__(self, token_to_id: Mapping[str, int]) -> None:
        tokens: list[str | None] = [None] * len(token_to_id)
        for token, idx in token_to_id.items():
            if not isinstance(token, str):
                raise DataError(
                    f"vocabulary token {token!r} is a {type(token).__name__}, not a string",
                    hint="a scGPT vocab.json maps gene names (strings) to integer ids",
                )
            if isinstance(idx, bool) or not isinstance(idx, int | np.integer):
                raise DataError(
                    f"vocabulary id of {token!r} is {idx!r}, not an integer",
                    hint="a scGPT vocab.json maps gene names to integer ids",
                )
            if not 0 <= idx < len(tokens):
                raise DataError(
                    f"vocabulary id {idx} of {token!r} is outside 0..{len(tokens) - 1}",
                    hint="ids must be exactly 0..n-1 (scGPT's GeneVocab needs consecutive ids); renumber the file",
                )
            if tokens[idx] is not None:
                raise DataError(
                    f"vocabulary id {idx} is used by both {tokens[idx]!r} and {token!r}",
                    hint="each id must belong to one token; renumber or deduplicate the file",
                )
            tokens[idx] = token
        self._tokens: tuple[str, ...] = tuple(t for t in tokens if t is not None)
        self._ids: dict[str, int] = {t: i for i, t in enumerate(self._tokens)}

    @classmethod
    def from_tokens(cls, tokens: Iterable[str]) -> GeneVocabulary:
        """Number ``tokens`` 0, 1, 2, ... in the order given."""
        mapping: dict[str, int] = {}
        for token in tokens:
            if token in mapping:
                raise DataError(f"token {token!r} appears twice", hint="pass each token once")
            mapping[token] = len(mapping)
        return cls(mapping)

    @classmethod
    def from_json(cls, path: Path | str) -> GeneVocabulary:
        """Load a scGPT ``vocab.json``; errors name the file and what is wrong with it."""
        path = Path(path)
        if not path.is_file():
            raise DataError(
                f"vocabulary file {path} does not exist",
                hint="pass the vocab.json that ships with the checkpoint",
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(
                f"vocabulary file {path} is not valid JSON ({exc})",
                hint="the file may be truncated or a pickle (vocab.pkl); re-download the checkpoint's vocab.json",
            ) from exc
        if not isinstance(data, dict):
            raise DataError(
                f"vocabulary file {path} holds a JSON {type(data).__name__}, not an object",
                hint='expected {"GENE": id, ...} as written by scGPT\'s GeneVocab.save_json',
            )
        try:
            return cls(data)
        except DataError as exc:
            raise DataError(f"{path}: {exc.message}", hint=exc.hint) from exc

    def to_json(self, path: Path | str) -> Path:
        """Write scGPT's format (``json.dump(indent=2)``, ids ascending) atomically."""
        text = json.dumps(dict(self.items()), indent=2, ensure_ascii=False)
        return atomic_write_text(path, text)

    def with_specials(self, specials: Iterable[str] = SCGPT_SPECIALS) -> GeneVocabulary:
        """A copy with each missing special appended at the next id, in the order given."""
        mapping = dict(self.items())
        for token in specials:
            if token not in mapping:
                mapping[token] = len(mapping)
        return GeneVocabulary(mapping)

    def __len__(self) -> int:
        return len(self._tokens)

    def __getitem__(self, token: str) -> int:
        try:
            return self._ids[token]
        except KeyError:
            raise KeyError(f"{token!r} is not in the vocabulary ({len(self)} tokens)") from None

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GeneVocabulary) and self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(self._tokens)

    def __repr__(self) -> str:
        return f"GeneVocabulary({len(self)} tokens, sha256={self.sha256[:12]})"

    def items(self) -> Iterator[tuple[str, int]]:
        """(token, id) pairs in id order."""
        return ((t, i) for i, t in enumerate(self._tokens))

    def token(self, idx: int) -> str:
        """The token with id ``idx``."""
        return self._tokens[idx]

    def get(self, token: str, default: int = -1) -> int:
        return self._ids.get(token, default)

    def ids(self, genes: Iterable[str]) -> np.ndarray:
        """int64 ids of ``genes``, -1 where a gene is not in the vocabulary."""
        lookup = self._ids.get
        return np.fromiter((lookup(g, -1) for g in genes), dtype=np.int64)

    @property
    def sha256(self) -> str:
        """Hash of the canonical JSON (sorted keys, no whitespace): same table, same hash, any formatting."""
        canonical = json.dumps(dict(self.items()), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
