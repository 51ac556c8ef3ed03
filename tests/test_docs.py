"""The docs site builds with warnings as errors, and every code block in the docs is checked.

Code blocks in README.md, CONTRIBUTING.md and docs/*.md:

- ```python: compiled; executed too when the line before the fence is ``<!-- docs: run -->`` (for blocks that need
  no network and only the tiny registry models; ``<!-- docs: run needs biozoo_scgpt -->`` names the plugins a block
  needs, skipped without them). Executed blocks run from the repository root with ``HF_HUB_OFFLINE=1``;
- ```bash / ```console / ```shell: every ``zoo ...`` command is parsed against the real CLI, not run: each command
  and sub-command exists and every ``--flag`` is one of its options (console blocks: the ``$`` lines);
- ```yaml: parsed (safe_load), ```toml: parsed. Other languages (text, mermaid, plain ```) are not checked.

The build test needs mkdocs (the ``docs`` extra) and skips without it; the block checks need only the core.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")])
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>[^`]*)$")
_RUN = re.compile(r"^\s*<!--\s*docs:\s*run(?:\s+needs\s+(?P<needs>[\w ,]+?))?\s*-->\s*$")
_SHELL_OPS = {"|", "||", "&", "&&", ";", "(", ")", "$(", "`"}
_REDIRECTS = {"<", ">", ">>", "<<", ">&", "&>", "2>", "2>>"}


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, its text (dedented), where it starts, and how it may be run."""

    path: str
    line: int
    lang: str
    code: str
    run: bool = False
    needs: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.path}:{self.line} ({self.lang or 'plain'})"


def fenced_blocks(text: str, path: str = "<doc>") -> list[Block]:
    """Every fenced block in a markdown text, including those indented inside list items."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        info = opening["info"].strip().split()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^ *{fence}\s*$", lines[j]):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        previous = next((line for line in reversed(lines[:i]) if line.strip()), "")
        marker = _RUN.match(previous)
        needs = tuple(re.split(r"[\s,]+", marker["needs"].strip())) if marker and marker["needs"] else ()
        lang = info[0].lower() if info else ""
        blocks.append(Block(path, i + 1, lang, textwrap.dedent("\n".join(body)) + "\n", bool(marker), needs))
        i = j + 1
    return blocks


# --- the checks: each returns the problems it found -------------------------------------------------------------


def _cli() -> Any:
    """The click command typer builds for ``zoo`` (typer may vendor click: only its public methods are used)."""
    import typer

    from biozoo.cli.app import app

    return typer.main.get_command(app)


def zoo_problems(args: list[str]) -> list[str]:
    """Problems with ``zoo ARGS``: a command that does not exist, or an option its command does not have.

    Parsed with click's ``make_context(..., resilient_parsing=True)`` (no callbacks, missing arguments and
    placeholders such as ``<commit>`` are fine); nothing runs.
    """
    command = _cli()
    ctx = command.make_context("zoo", [], resilient_parsing=True)
    args = list(args)
    while hasattr(command, "list_commands"):  # a group: options, then the sub-command
        flags = [a for a in args[: next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))]]
        problems = _flag_problems(command, ctx, flags)
        args = args[len(flags) :]
        if problems or not args or "--help" in flags:
            return problems
        name, *args = args
        sub = command.get_command(ctx, name)
        if sub is None:
            known = ", ".join(command.list_commands(ctx))
            return [f"`{ctx.command_path}` has no command {name!r} (it has: {known})"]
        command, ctx = sub, sub.make_context(name, list(args), parent=ctx, resilient_parsing=True)
    return _flag_problems(command, ctx, args)


def _flag_problems(command: Any, ctx: Any, args: list[str]) -> list[str]:
    """Options in ``args`` that ``command`` does not declare (an option's value is skipped, ``--`` ends options)."""
    options: dict[str, Any] = {name: None for name in ctx.help_option_names}
    for param in command.params:
        if param.param_type_name == "option":
            options.update({name: param for name in [*param.opts, *param.secondary_opts]})
    problems, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-" or re.fullmatch(r"-\d[\d.e-]*", arg):
            continue
        name, eq, _ = arg.partition("=")
        if name not in options:
            known = ", ".join(sorted(o for o in options if o.startswith("--")))
            problems.append(f"`{ctx.command_path}` has no option {name!r} (it has: {known})")
            continue
        param = options[name]
        skip = param is not None and not eq and not param.is_flag and not getattr(param, "count", False)
    return problems


def shell_commands(code: str, console: bool) -> list[list[str]]:
    """The simple commands of a shell block (console: only ``$`` lines), split at pipes, ``&&``, ``;``, ``$(``."""
    lines = code.splitlines()
    if console:
        lines = [line.lstrip()[2:] for line in lines if line.lstrip().startswith("$ ")]
    script = "\n".join(lines).replace("\\\n", " ")
    commands: list[list[str]] = []
    for line in script.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        current: list[str] = []
        tokens = iter(lexer)
        for token in tokens:
            if token in _SHELL_OPS or token.endswith("$("):
                commands.append(current)
                current = []
            elif token in _REDIRECTS:
                next(tokens, None)  # the redirection's target
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


def _zoo_args(command: list[str]) -> list[str] | None:
    """The arguments when a simple command runs ``zoo`` (after ``VAR=value`` prefixes and ``time``), else None."""
    words = list(command)
    while words and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]) or words[0] in {"time", "exec", "env"}):
        words.pop(0)
    if words and (words[0] == "zoo" or words[0].endswith("/zoo")):
        return words[1:]
    return None


def block_problems(block: Block) -> list[str]:
    """What is wrong with a block, per its language (see the module docstring); python blocks are compiled only."""
    try:
        if block.lang in {"python", "py"}:
            compile(block.code, str(block), "exec")
        elif block.lang in {"yaml", "yml"}:
            yaml.safe_load(block.code)
        elif block.lang == "toml":
            tomllib.loads(block.code)
        elif block.lang in {"bash", "sh", "shell", "console"}:
            problems = []
            for command in shell_commands(block.code, console=block.lang == "console"):
                args = _zoo_args(command)
                if args is not None:
                    problems += [f"zoo {shlex.join(args)}: {p}" for p in zoo_problems(args)]
            return problems
    except (SyntaxError, yaml.YAMLError, tomllib.TOMLDecodeError, ValueError) as error:
        return [f"not valid {block.lang}: {error}"]
    return []


def run_block(block: Block) -> None:
    """Execute a python block from the repository root, offline, in a fresh namespace (raises what it raises)."""
    exec(compile(block.code, str(block), "exec"), {"__name__": "__docs__"})


# --- the docs themselves --------------------------------------------------------------------------------------


def _file_blocks(path: Path) -> list[Block]:
    return fenced_blocks(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())


def _blocks() -> list[Block]:
    return [block for path in DOC_FILES for block in _file_blocks(path)]


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_code_block_is_valid(path: Path) -> None:
    problems = [f"{block}: {problem}" for block in _file_blocks(path) for problem in block_problems(block)]
    assert not problems, "\n".join(problems)


RUNNABLE = [b for b in _blocks() if b.run]


@pytest.mark.parametrize("block", RUNNABLE, ids=str)
def test_runnable_python_blocks_run(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = [name for name in block.needs if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_block(block)


def test_some_blocks_are_run_and_every_language_is_checked() -> None:
    blocks = _blocks()
    assert {b.path for b in RUNNABLE} >= {"README.md", "docs/cli.md"}
    assert all(b.lang in {"python", "py"} for b in RUNNABLE), [str(b) for b in RUNNABLE if b.lang != "python"]
    assert {"python", "yaml", "bash", "console", "toml"} <= {b.lang for b in blocks}


# --- each check can fail ----------------------------------------------------------------------------------------


def _one(markdown: str) -> Block:
    (block,) = fenced_blocks(textwrap.dedent(markdown))
    return block


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("```python\ndef f(:\n```\n", "not valid python"),
        ("```yaml\nid: [unclosed\n```\n", "not valid yaml"),
        ("```toml\n[project\n```\n", "not valid toml"),
        ("```console\n$ zoo lisst\n```\n", "`zoo` has no command 'lisst'"),
        ("```console\n$ zoo list --no-such-flag  # comment\n```\n", "`zoo list` has no option '--no-such-flag'"),
        ("```bash\nHF_ENDPOINT=x zoo hub serve --port 1 --bogus=2\n```\n", "`zoo hub serve` has no option '--bogus'"),
        ("```bash\nzoo hub nosuch\n```\n", "`zoo hub` has no command 'nosuch'"),
        ("```bash\ncommit=$(zoo publish ./m --repo a/b --nope)\n```\n", "`zoo publish` has no option '--nope'"),
        ("```bash\nzoo list | grep x && zoo info --wrong x\n```\n", "`zoo info` has no option '--wrong'"),
        ("- a list item:\n\n   ```python\n   x = (\n   ```\n", "not valid python"),
    ],
)
def test_a_wrong_block_is_reported(markdown: str, expected: str) -> None:
    problems = block_problems(_one(markdown))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    "markdown",
    [
        "```console\n$ zoo load hf://lab/m@<commit> --dtype bf16\nloaded in 0.1 s --not-an-option\n```\n",
        "```bash\nzoo embed scgpt/cls in.h5ad -o out.h5ad --seed -1 --batch-size=8   # a comment --nope\n```\n",
        "```bash\nzoo hub serve --root ./hub --token T > log.txt 2>&1 &\nzoo --help\nzoo list --help\n```\n",
        "```bash\npip install -e ./x --no-deps\n```\n",
        "```text\nzoo list --nope\n```\n",
        "```python\nimport biozoo\n```\n",
    ],
)
def test_a_right_block_passes(markdown: str) -> None:
    assert block_problems(_one(markdown)) == []


def test_run_markers() -> None:
    block = _one("<!-- docs: run needs biozoo_scgpt, biozoo_attention -->\n```python\nraise RuntimeError('ran')\n```\n")
    assert block.run and block.needs == ("biozoo_scgpt", "biozoo_attention")
    with pytest.raises(RuntimeError, match="ran"):
        run_block(block)
    assert not _one("```python\nx = 1\n```\n").run


# --- the site ---------------------------------------------------------------------------------------------------


def _hooks() -> Any:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_has_every_command_and_option() -> None:
    page = _hooks().cli_reference()

    def walk(command: Any, ctx: Any) -> None:
        assert f"## `{ctx.command_path}`" in page
        for param in command.params:
            for name in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
                if param.param_type_name == "option" and not param.hidden:
                    assert f"`{name}`" in page, (ctx.command_path, name)
        if hasattr(command, "list_commands"):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                walk(sub, sub.make_context(name, [], parent=ctx, resilient_parsing=True))

    root = _cli()
    walk(root, root.make_context("zoo", [], resilient_parsing=True))
    assert "## `zoo hub serve`" in page and "`--protect-reads`" in page


def test_the_manifest_reference_has_every_field() -> None:
    import json

    from biozoo.manifest.io import json_schema

    page = _hooks().manifest_reference()
    schema = json.loads(json_schema())
    for section in [schema, *schema["$defs"].values()]:
        for field in section.get("properties", {}):
            assert f"| `{field}` |" in page, field
    assert "[WeightsSpec](#weightsspec)" in page


def test_readme_links_point_at_site_pages() -> None:
    site_links = _hooks().site_links
    assert site_links("[a](docs/cli.md#x) [b](CONTRIBUTING.md) [c](https://x/docs/y.md)") == (
        "[a](cli.md#x) [b](contributing.md) [c](https://x/docs/y.md)"
    )


def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    pytest.importorskip("material", reason="the docs extra is not installed")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    result = subprocess.run(build, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "zoo hub serve" in cli
    api = (tmp_path / "site" / "api" / "attention" / "index.html").read_text(encoding="utf-8")
    assert all(name in api for name in ("combined_bias", "expand_kv_heads", "causal_keep", "ALL_MASKS"))
    tasks = (tmp_path / "site" / "api" / "tasks" / "index.html").read_text(encoding="utf-8")
    assert "EmbedResult" in tasks


def test_a_file_in_place_of_a_generated_page_is_an_error(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File, Files

    (tmp_path / "index.md").write_text("# hand-written\n", encoding="utf-8")
    files = Files([File("index.md", str(tmp_path), str(tmp_path / "site"), use_directory_urls=True)])
    with pytest.raises(PluginError, match="docs/index.md is generated"):
        _hooks().on_files(files, config=None)
