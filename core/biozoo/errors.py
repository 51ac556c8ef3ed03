"""Every error biozoo raises on purpose.

Each error says what went wrong *and* what to do about it (``hint``), because
our users are scientists who should not have to read a traceback to find out
that a plugin is missing or a file was truncated.
"""

from __future__ import annotations


class BiozooError(Exception):
    """Base class: a message naming the problem plus a hint naming the fix."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message}\n  hint: {hint}")


class ManifestError(BiozooError):
    """A manifest is malformed, names an unsafe path, or fails validation."""


class UnknownNameError(BiozooError, KeyError):
    """A model, component, processor or converter name is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return Exception.__str__(self)


class DuplicateNameError(BiozooError):
    """Two plugins claim the same name."""


class PluginError(BiozooError):
    """A plugin is broken, incompatible with this core, or misdeclared."""


class AssemblyError(BiozooError):
    """Components do not fit together (kind or port mismatch, bad config)."""


class WeightsError(BiozooError):
    """Weights are missing, corrupt, mis-shaped or fail their checksum."""


class HubError(BiozooError):
    """The Hub is unreachable, or a repository or revision does not exist."""


class AttentionError(BiozooError):
    """An attention processor cannot honour a call (mask kind, causal, scale...)."""


class VerificationError(BiozooError):
    """A model's outputs disagree with the test vectors in its manifest."""


class InvalidArgumentError(BiozooError, ValueError):
    """An option or argument is out of range (``--temperature -1``, ``--epochs 0``, ``-n 0``).

    Also a ``ValueError``, so Python callers that catch bad-argument errors the usual way still do.
    """


class ModelOutputError(BiozooError):
    """A model produced outputs that cannot be right (NaN or infinite values), usually from broken weights."""


class BiozooWarning(UserWarning):
    """Something a user should know that does not stop the run (the CLI prints it as a ``warning:`` line)."""


class BiozooDeprecationWarning(FutureWarning):
    """A deprecated name was used (a renamed component, processor or model): it still works, for now.

    A ``FutureWarning``, so users see it by default: they are the ones who can update a manifest.
    """
