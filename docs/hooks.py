"""MkDocs hooks: the reference pages are generated from the code at build time, so they cannot drift from it.

- ``index.md`` and ``contributing.md`` take their text from README.md and CONTRIBUTING.md (one source for GitHub
  and the site), with repository-relative links rewritten for the site;
- ``reference/cli.md``: every ``zoo`` command with its arguments and options, read from the typer app's click
  commands (names, types, defaults, help), without running anything;
- ``reference/manifest-schema.md``: every manifest field with its type and description, from the pydantic schema;
- ``api/*.md``: mkdocstrings directives for the modules a plugin author uses.

Nothing generated is written to disk: the pages exist only in the build. Imports are those of ``zoo --help``
(typer, pydantic): building the docs never imports torch.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# page -> (title, mkdocstrings directives); the API reference's nav lists these pages in this order
API_PAGES: dict[str, tuple[str, list[str]]] = {
    "api/api.md": ("biozoo (load, verify, publish)", ["biozoo.api", "biozoo.hub.publish", "biozoo.errors"]),
    "api/plugins.md": ("Plugin hooks and declarations", ["biozoo.plugins.hookspecs", "biozoo.plugins.declarations"]),
    "api/tasks.md": ("Task contracts", ["biozoo.tasks"]),
    "api/components.md": ("Components and ports", ["biozoo.components.base", "biozoo.components.ports"]),
    "api/nn.md": ("biozoo.nn", ["biozoo.nn"]),
    "api/attention.md": ("biozoo.attention", ["biozoo.attention", "biozoo.attention.processors"]),
    "api/singlecell.md": ("biozoo.singlecell", ["biozoo.singlecell"]),
    "api/testing.md": ("biozoo.testing", ["biozoo.testing"]),
}

# a repository file included as a site page: (source, page)
INCLUDED = {"README.md": "index.md", "CONTRIBUTING.md": "contributing.md"}
# docstrings use Sphinx roles (:func:`load`); mkdocstrings renders them as ":func:" before the code: drop the role
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):(?=<code>)")
_LINK = re.compile(r"\]\((?!https?://|#|mailto:)([^)\s]+)\)")


def site_links(markdown: str) -> str:
    """Rewrite a root-level file's links (``docs/cli.md``, ``CONTRIBUTING.md``) to the site's pages."""

    def fix(match: re.Match[str]) -> str:
        target, _, anchor = match.group(1).partition("#")
        if target in INCLUDED:
            target = INCLUDED[target]
        elif target.startswith("docs/"):
            target = target.removeprefix("docs/")
        return f"]({target}{'#' + anchor if anchor else ''})"

    return _LINK.sub(fix, markdown)


def _escape(text: str) -> str:
    """Help text as markdown: ``<model>`` is a placeholder, not an HTML tag."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: Any) -> str:
    """Text for a markdown table cell: one line, pipes and angle brackets escaped."""
    return _escape(" ".join(str(text).split()).replace("|", "\\|"))


# --- CLI reference -------------------------------------------------------------------------------------------


# typer may vendor click (0.28 does): only the commands' public attributes are used, never click's classes


def _is_group(command: Any) -> bool:
    return hasattr(command, "list_commands")


def _subcommands(command: Any, ctx: Any) -> Iterator[tuple[str, Any]]:
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        if sub is not None and not sub.hidden:
            yield name, sub


def _commands(command: Any, ctx: Any) -> Iterator[tuple[Any, Any]]:
    """Every command under ``command`` (depth first, in the app's order), with its click context."""
    yield command, ctx
    if _is_group(command):
        for name, sub in _subcommands(command, ctx):
            yield from _commands(sub, sub.make_context(name, [], parent=ctx, resilient_parsing=True))


def _param_type(param: Any) -> str:
    kind = param.type
    if hasattr(kind, "choices"):
        return " \\| ".join(f"`{c}`" for c in kind.choices)
    if getattr(param, "is_flag", False):
        return "flag"
    if hasattr(kind, "min") and hasattr(kind, "max"):  # IntRange, FloatRange
        bounds = [f"≥ {kind.min}" if kind.min is not None else "", f"≤ {kind.max}" if kind.max is not None else ""]
        return f"{'integer' if type(kind).__name__.startswith('Int') else 'number'} {' '.join(b for b in bounds if b)}"
    return kind.name


def _usage(command: Any, ctx: Any) -> str:
    pieces = [ctx.command_path, "[OPTIONS]"]
    for param in command.params:
        if param.param_type_name == "argument":
            name = param.name.upper() + ("..." if param.nargs == -1 else "")
            pieces.append(name if param.required else f"[{name}]")
    if _is_group(command):
        pieces.append("COMMAND")
    return " ".join(pieces)


def cli_reference() -> str:
    """Markdown for every ``zoo`` command, read from the click commands typer builds from ``biozoo.cli.app``."""
    import typer

    from biozoo.cli.app import app

    root = typer.main.get_command(app)
    out = [
        "# CLI reference",
        "",
        "Generated from the `zoo` command's own definitions when the docs are built "
        "(the same text as `zoo COMMAND --help`); [the CLI guide](../cli.md) explains the commands with examples.",
        "",
    ]
    for command, ctx in _commands(root, root.make_context("zoo", [], resilient_parsing=True)):
        heading = f"## `{ctx.command_path}` {{ #{_anchor(ctx.command_path)} }}"
        help_text = _escape(inspect.cleandoc(command.help or ""))
        out += [heading, "", help_text, "", "```text", _usage(command, ctx), "```", ""]
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        options = [p for p in command.params if p.param_type_name == "option" and not p.hidden]
        if arguments:
            out += ["| argument | type | required | description |", "|---|---|---|---|"]
            for p in arguments:
                required = "yes" if p.required else "no"
                text = _cell(getattr(p, "help", "") or "")
                out.append(f"| `{p.name.upper()}` | {_param_type(p)} | {required} | {text} |")
            out.append("")
        if options:
            out += ["| option | type | default | description |", "|---|---|---|---|"]
            for p in options:
                names = ", ".join(f"`{n}`" for n in [*p.opts, *p.secondary_opts])
                unset = p.default is None or p.default is False
                default = "required" if p.required else "" if unset else f"`{p.default}`"
                out.append(f"| {names} | {_param_type(p)} | {default} | {_cell(p.help or '')} |")
            out.append("")
        if _is_group(command):
            out += ["| command | what |", "|---|---|"]
            for name, sub in _subcommands(command, ctx):
                link = f"[`{name}`](#{_anchor(f'{ctx.command_path} {name}')})"
                out.append(f"| {link} | {_cell(sub.get_short_help_str(limit=200))} |")
            out.append("")
    return "\n".join(out)


def _anchor(command_path: str) -> str:
    """A command's anchor: ``zoo hub serve`` -> ``zoo-hub-serve``."""
    return command_path.replace(" ", "-")


# --- Manifest reference --------------------------------------------------------------------------------------


def _schema_type(prop: dict[str, Any]) -> str:
    """A JSON-schema property's type in words, ``$ref``s linked to their section."""
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in prop:
        kinds = [_schema_type(p) for p in prop["anyOf"] if p.get("type") != "null"]
        optional = any(p.get("type") == "null" for p in prop["anyOf"])
        return " or ".join(kinds) + (" or null" if optional else "")
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_schema_type(prop.get('items', {}))}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"mapping of string to {_schema_type(prop['additionalProperties'])}"
    return " or ".join(kind) if isinstance(kind, list) else kind


def _schema_section(title: str, schema: dict[str, Any]) -> list[str]:
    out = [f"## {title}", "", _cell(schema.get("description", "")), ""]
    properties = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", []))
        out += ["| field | type | required | default | description |", "|---|---|---|---|---|"]
        for name, prop in properties.items():
            default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
            is_required = "yes" if name in required else "no"
            description = _cell(prop.get("description", ""))
            out.append(f"| `{name}` | {_schema_type(prop)} | {is_required} | {default} | {description} |")
        out.append("")
    else:
        out += [f"Type: {_schema_type(schema)}.", ""]
    return out


def manifest_reference() -> str:
    """Markdown for every manifest field, from the pydantic model's JSON schema (``biozoo.manifest.io``)."""
    from biozoo.manifest.io import json_schema

    schema = json.loads(json_schema())
    out = [
        "# Manifest schema",
        "",
        "Generated from the pydantic model that validates every `manifest.yaml` when the docs are built "
        "([docs/manifest.schema.json](../manifest.schema.json) is the same schema as JSON); "
        "[the manifest guide](../manifest.md) explains the fields with a worked example.",
        "",
    ]
    out += _schema_section(schema.get("title", "Manifest"), schema)
    for name, sub in sorted(schema.get("$defs", {}).items()):
        out += _schema_section(name, sub)
    return "\n".join(out)


# --- API reference -------------------------------------------------------------------------------------------


def api_page(title: str, objects: list[str]) -> str:
    """A page of mkdocstrings directives."""
    return "\n\n".join([f"# {title}", *(f"::: {name}" for name in objects)]) + "\n"


def generated_pages() -> dict[str, str]:
    """Every generated page: site path -> markdown."""
    pages = {page: site_links((ROOT / source).read_text(encoding="utf-8")) for source, page in INCLUDED.items()}
    pages["reference/cli.md"] = cli_reference()
    pages["reference/manifest-schema.md"] = manifest_reference()
    pages.update({page: api_page(title, objects) for page, (title, objects) in API_PAGES.items()})
    return pages


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated pages (MkDocs builds the nav after this, so the nav can list them)."""
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File

    for path, content in generated_pages().items():
        if files.get_file_from_path(path) is not None:
            raise PluginError(f"docs/{path} is generated by docs/hooks.py: remove the file, or change its source")
        files.append(File.generated(config, path, content=content))
    return files


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs hook: docstrings' Sphinx roles render as their code alone."""
    return _ROLE.sub("", html)
