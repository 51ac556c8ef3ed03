"""The manifest schema: one YAML file that says how to assemble and check a model.

A manifest is *data*: it names registered components of installed plugins and
their JSON configs, where the weights are (with a sha256 per file), how inputs
are preprocessed, the licence, and test vectors that ``zoo verify`` re-runs.
Nothing in it can make code run, and no file name in it can leave the model
folder.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from biozoo.manifest.paths import check_relative_path

FORMAT_VERSION = 1
MODEL_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*/[a-z0-9][a-z0-9_.\-]*$")
COMPONENT_RE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z0-9][a-z0-9_\-]*$")
# The repo id and the revision become paths in the Hub cache (``models--ORG--NAME``, ``refs/<revision>``), so both
# follow the Hub's and git's naming rules strictly: ASCII, no '..' or '--' in the id, no '.git' ending, and revision
# parts that are never empty, '.', '..', start with '.' or '-', or end with '.lock' (git check-ref-format).
_HF_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_.\-]{0,94}[A-Za-z0-9_])?"
_HF_REV_PART = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(?<!\.lock)(?<!\.)"
HF_SOURCE_RE = re.compile(
    rf"^hf://(?P<repo>(?![^@]*(?:--|\.\.)){_HF_NAME}/{_HF_NAME}(?<!\.git))"
    rf"(?:@(?P<revision>(?!.*\.\.){_HF_REV_PART}(?:/{_HF_REV_PART})*))?$"
)
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
PARAMETER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*$")  # a state-dict key: 'head.decoder.weight'


def hf_source_problem(value: str) -> str | None:
    """Why ``value`` is not a safe ``hf://ORG/NAME@REVISION`` (None when it is), in words a user can act on."""
    if HF_SOURCE_RE.match(value):
        return None
    repo, _, revision = value.removeprefix("hf://").partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        reason = "the repository must be ORG/NAME"
    elif ".." in repo or "--" in repo or repo.endswith(".git"):
        reason = "a repository id may not contain '..' or '--', nor end with '.git'"
    elif "@" in value and any(p in ("", ".", "..") for p in revision.split("/")):
        reason = "the revision has an empty, '.' or '..' part and could leave the Hub cache"
    else:
        reason = (
            "names use ASCII letters, digits, '_', '-' and '.'; revision parts may not start with '.' or '-', "
            "contain '..' or end with '.lock'"
        )
    return f"{value!r} is not a valid Hub reference hf://ORG/NAME@REVISION: {reason}"


RelativePath = Annotated[str, AfterValidator(check_relative_path)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lower-case hex sha256 of the file")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentRef(_Strict):
    """A registered component by name, with the JSON config passed to its constructor."""

    name: str = Field(description="registered component name, 'plugin.component'")
    config: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not COMPONENT_RE.match(value):
            raise ValueError(f"{value!r} is not a component name of the form 'plugin.component'")
        return value

    @property
    def plugin(self) -> str:
        return self.name.split(".", 1)[0]


class WeightFile(_Strict):
    path: RelativePath
    sha256: Sha256
    size: int | None = Field(default=None, ge=0, description="bytes; checked before hashing when given")


class WeightsSpec(_Strict):
    """Where the weights live. ``source`` is the model folder ('.'), a sub-folder, or ``hf://ORG/NAME@REV``."""

    source: str = "."
    files: list[WeightFile] = Field(min_length=1)
    index: RelativePath | None = Field(default=None, description="safetensors shard index (weight_map)")

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value.startswith("hf://"):
            problem = hf_source_problem(value)
            if problem:
                raise ValueError(problem)
            return value
        if "://" in value:
            raise ValueError(f"{value!r}: only 'hf://' sources and relative folders are supported")
        return check_relative_path(value)

    @model_validator(mode="after")
    def _safetensors_only(self) -> WeightsSpec:
        for item in self.files:
            name = item.path
            if not (name.endswith(".safetensors") or name == self.index):
                raise ValueError(
                    f"weights file {name!r} is not safetensors; biozoo never loads pickles "
                    "(convert it with `zoo convert`)"
                )
        if self.index is not None and self.index not in {f.path for f in self.files}:
            raise ValueError(f"index {self.index!r} must also be listed in files (with its sha256)")
        return self

    @property
    def hf_repo(self) -> tuple[str, str | None] | None:
        match = HF_SOURCE_RE.match(self.source)
        return (match["repo"], match["revision"]) if match else None


class Tolerance(_Strict):
    """How close outputs must be, as bioimage.io's reproducibility tolerance."""

    atol: float = Field(default=1e-5, ge=0)
    rtol: float = Field(default=1e-5, ge=0)
    mismatched_per_million: int = Field(default=0, ge=0, le=5000)


class TestVectors(_Strict):
    """A safetensors file holding ``input.NAME`` and ``output.NAME`` tensors."""

    file: RelativePath
    sha256: Sha256
    tolerance: Tolerance = Field(default_factory=Tolerance)
    provenance: str = Field(default="", description="how the expected outputs were produced")


class Preprocessing(_Strict):
    """The input contract: which tokenizer/preprocessor, its files and settings."""

    name: str = Field(description="registered preprocessor, e.g. 'scgpt.gene_tokenizer'")
    files: dict[str, RelativePath] = Field(default_factory=dict, description="role -> file, e.g. vocabulary")
    config: dict[str, JsonValue] = Field(default_factory=dict)


class AttentionSettings(_Strict):
    """Default attention processor for the model, and per-module overrides (glob -> name)."""

    processor: str = "auto"
    overrides: dict[str, str] = Field(default_factory=dict)


class Conversion(_Strict):
    """For models whose official weights must first be converted (``zoo convert``)."""

    converter: str
    instructions: str = ""
    upstream: str = Field(default="", description="where the official files are published")


class Manifest(_Strict):
    """A named model: how to assemble it, where its weights are, how to check it."""

    format_version: Literal[1] = FORMAT_VERSION
    id: str = Field(description="'namespace/name', e.g. 'scgpt/cls'")
    aliases: list[str] = Field(
        default_factory=list,
        description="former ids of this model: they still load it, with a deprecation warning naming this id",
    )
    description: str = ""
    architecture: ComponentRef
    components: dict[str, ComponentRef] = Field(default_factory=dict, description="slot -> component")
    attention: AttentionSettings = Field(default_factory=AttentionSettings)
    tie: dict[str, str] = Field(
        default_factory=dict,
        description="tied parameters, alias -> source (state-dict names): one parameter under two names, "
        "stored once in the weights under the source name",
    )
    preprocessing: Preprocessing | None = None
    weights: WeightsSpec | None = None
    conversion: Conversion | None = None
    test_vectors: TestVectors | None = None
    license: str = Field(default="unknown", description="SPDX identifier")
    authors: list[str] = Field(default_factory=list)
    citation: str = ""
    tags: list[str] = Field(default_factory=list)
    references: list[str] = Field(default_factory=list)
    metadata: dict[str, JsonValue] = Field(default_factory=dict, description="free-form, never interpreted")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not MODEL_ID_RE.match(value):
            raise ValueError(f"{value!r} is not a model id of the form 'namespace/name' (lower-case)")
        return value

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        for alias in value:
            if not MODEL_ID_RE.match(alias):
                raise ValueError(f"alias {alias!r} is not a model id of the form 'namespace/name' (lower-case)")
        return value

    @field_validator("tie")
    @classmethod
    def _tie(cls, value: dict[str, str]) -> dict[str, str]:
        for alias, source in value.items():
            for name in (alias, source):
                if not PARAMETER_RE.match(name):
                    raise ValueError(f"{name!r} is not a parameter name such as 'head.decoder.weight'")
            if alias == source:
                raise ValueError(f"{alias!r} is tied to itself")
            if source in value:  # a chain: which one holds the values would depend on the order
                raise ValueError(
                    f"{alias!r} is tied to {source!r}, which is itself tied to {value[source]!r}: "
                    f"tie {alias!r} to {value[source]!r} directly"
                )
        return value

    @model_validator(mode="after")
    def _weights_or_conversion(self) -> Manifest:
        if self.weights is None and self.conversion is None:
            raise ValueError("a manifest needs 'weights', or 'conversion' for models that must be converted first")
        return self

    @property
    def plugins(self) -> set[str]:
        """The plugins whose components this model needs."""
        refs = [self.architecture, *self.components.values()]
        return {ref.plugin for ref in refs} | ({self.preprocessing.name.split(".")[0]} if self.preprocessing else set())

    def json_for_card(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True)
