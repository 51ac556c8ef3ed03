"""Atomic outputs: write beside the target, fsync, then rename over it.

A crash or an exception leaves either the old file or no file, never half of one.
Files get the mode a plain ``open()`` would give (``0o666`` less the umask, or the
mode of the file they replace), not the private ``0o600`` of a temporary file.
Temporary names carry this host and process id, so the leftovers of a killed run
(``kill -9``) are swept by the next write to the same target, while another live
writer's temporaries are left alone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from biozoo.errors import BiozooError

#: errno values that mean "the disk (or a quota or file size limit) is full".
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class OutputError(BiozooError):
    """An output cannot be written where it was asked for (exists, unwritable, disk full)."""


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux), else by set-and-restore."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_mode(replacing: Path | None = None, *, directory: bool = False) -> int:
    """The mode ``open()`` / ``mkdir()`` would give: the replaced file's, else ``0o666``/``0o777`` less the umask."""
    if replacing is not None:
        with contextlib.suppress(OSError):
            return stat.S_IMODE(replacing.stat().st_mode)
    return (0o777 if directory else 0o666) & ~current_umask()


def _tag() -> str:
    """``<host hash>-<pid>``: whose temporary a ``.partial`` is, so stale ones can be told from live ones."""
    host = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
    return f"{host}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def sweep_stale_partials(target: Path) -> list[Path]:
    """Remove ``.<target>.<host>-<pid>-*.partial`` left by dead processes of this host; returns what went."""
    host = _tag().split("-", 1)[0]
    owner = re.compile(rf"^\.+{re.escape(target.name)}\.{host}-(\d+)-")
    removed = []
    with contextlib.suppress(OSError):
        for leftover in target.parent.glob(f".*{glob_escape(target.name)}.{host}-*.partial*"):
            match = owner.match(leftover.name)
            if not match or _alive(int(match[1])):
                continue
            _remove(leftover)
            removed.append(leftover)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def disk_full_error(exc: OSError, where: Path) -> OutputError:
    """A full disk said as a full disk, with the free space left and what to do."""
    free = ""
    with contextlib.suppress(OSError):
        free = f" ({shutil.disk_usage(where).free / 2**20:.0f} MiB free)"
    reason = {errno.EFBIG: "the file size limit (ulimit -f) was reached"}.get(exc.errno or 0, "the disk is full")
    return OutputError(
        f"cannot write {where}: {reason}{free}; nothing was replaced",
        "free some space or write elsewhere with -o/--output",
    )


def ensure_room(target: Path, needed: int) -> None:
    """Refuse a write of ``needed`` bytes that the disk's free space or the file size limit cannot hold."""
    import resource

    where = _nearest_existing(target.parent)
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(where).free
        if needed > free:
            raise OutputError(
                f"cannot write {target}: it needs about {needed / 2**20:.0f} MiB and {where} has "
                f"{free / 2**20:.0f} MiB free; nothing was written",
                "free some space or write elsewhere with -o/--output",
            )
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and needed > soft:
        raise OutputError(
            f"cannot write {target}: it needs about {needed / 2**20:.0f} MiB, over this shell's file size limit "
            f"of {soft / 2**20:.1f} MiB (ulimit -f); nothing was written",
            "raise the limit (ulimit -f unlimited) or write a smaller output",
        )


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; it replaces ``target`` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_partials(target)
    mode = plain_mode(target if target.exists() else None)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{_tag()}-", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, target)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(exc, target) from None
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def atomic_write_text(target: Path | str, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def atomic_write_bytes(target: Path | str, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def give_plain_modes(folder: Path) -> None:
    """Give a staged folder and everything in it the modes ``open()``/``mkdir()`` would.

    Some writers (safetensors' ``save_file`` among them) create private ``0o600`` files; a model
    folder is meant to be shared and published.
    """
    files, folders = plain_mode(), plain_mode(directory=True)
    os.chmod(folder, folders)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, folders if path.is_dir() else files)


@contextlib.contextmanager
def atomic_directory(target: Path | str) -> Iterator[Path]:
    """Yield a staging folder beside ``target``; it becomes ``target`` only if the block succeeds.

    ``target`` must not exist (nothing is overwritten; the CLI's ``--overwrite`` goes through
    :func:`staged_output`). The folder gets the usual permissions, not those of a temporary directory.
    """
    target = Path(target)
    if target.exists():
        raise OutputError(f"{target} already exists", "choose a new output folder, or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_partials(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_tag()}-", suffix=".partial", dir=target.parent))
    os.chmod(staging, plain_mode(directory=True))
    try:
        yield staging
        give_plain_modes(staging)
        os.rename(staging, target)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            raise disk_full_error(exc, target) from None
        raise


# -- the CLI's output policy: refuse to replace unless asked, check before computing ---------------------------


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output(
    target: Path,
    *,
    overwrite: bool,
    folder: bool = False,
    flag: str = "-o",
    needed: int = 0,
    markers: tuple[str, ...] = ("manifest.yaml",),
) -> None:
    """Refuse an output that cannot or must not be written, before any long computation.

    Checks: an existing target needs ``overwrite`` (and a folder may only be replaced by one if
    it is empty or holds one of ``markers``, the file a command writes into its output folder (a model
    folder's ``manifest.yaml`` by default): ``--overwrite`` never deletes someone's data directory); a file
    output must not name a folder and vice versa; the place it goes must be writable (a real probe
    file, so read-only mounts and immutable folders are caught too) and have room for ``needed`` bytes.
    """
    what = "folder" if folder else "file"
    if target.is_symlink() or target.exists():
        if target.is_dir() != folder:
            kind = "a folder" if target.is_dir() else "a file"
            raise OutputError(f"the output {target} is {kind}", f"give a new {what} name with {flag}")
        if not overwrite:
            raise OutputError(
                f"the output {target} already exists",
                f"pass --overwrite to replace it, or choose a new {what} with {flag}",
            )
        if folder and any(target.iterdir()) and not any((target / m).is_file() for m in markers):
            kind = "a model folder" if markers == ("manifest.yaml",) else "one this command wrote"
            raise OutputError(
                f"{target} is a folder but not {kind} (no {' or '.join(markers)}); --overwrite will not delete it",
                f"choose a new folder with {flag}",
            )
    parent = _nearest_existing(target.parent)
    if not parent.is_dir():
        raise OutputError(f"cannot create {target}: {parent} is not a folder", f"choose another path with {flag}")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.{_tag()}-", suffix=".partial", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(exc, parent) from None
        raise OutputError(
            f"cannot write into {parent}: {exc.strerror or exc}", f"choose a writable place with {flag}"
        ) from None
    ensure_room(target, needed)


@contextlib.contextmanager
def staged_output(
    target: Path | str,
    *,
    overwrite: bool,
    folder: bool = False,
    flag: str = "-o",
    needed: int = 0,
    markers: tuple[str, ...] = ("manifest.yaml",),
) -> Iterator[Path]:
    """Hand a command a fresh sibling path to write; publish it as ``target`` only when the command succeeds.

    The writer never sees ``target`` itself, so the overwrite policy holds whatever the writer does:
    without ``overwrite`` an output that appeared meanwhile is not replaced (no-clobber rename),
    with it the old output is swapped out only after the new one is complete. Every failure path
    removes what was staged.
    """
    target = Path(target)
    check_output(target, overwrite=overwrite, folder=folder, flag=flag, needed=needed, markers=markers)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_partials(target)
    stage = target.parent / f".{target.name}.{_tag()}-{os.urandom(4).hex()}.partial"
    if not folder:  # keep the extension: writers check it (e.g. '.h5ad')
        stage = stage.with_name(stage.name + "".join(target.suffixes[-1:]))
    try:
        yield stage
        if not stage.exists():
            raise OutputError(f"the command wrote nothing to {target}")
        _publish(stage, target, overwrite=overwrite, folder=folder, flag=flag)
    except OutputError as exc:  # said of the staged name: say it of the user's
        _remove(stage)
        message = exc.message.replace(str(stage), str(target)).replace(stage.name, target.name)
        raise OutputError(message, exc.hint) from None
    except BaseException as exc:
        _remove(stage)
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            raise disk_full_error(exc, target) from None
        raise


def _publish(stage: Path, target: Path, *, overwrite: bool, folder: bool, flag: str) -> None:
    exists = target.is_symlink() or target.exists()
    if exists and not overwrite:
        raise OutputError(
            f"the output {target} appeared while this command ran; it was not replaced",
            f"pass --overwrite to replace it, or choose a new name with {flag}",
        )
    if not folder:
        os.chmod(stage, plain_mode(target if exists else None))
        if exists:
            os.replace(stage, target)
            return
        try:
            os.link(stage, target)  # fails if the target appeared in the meantime: never clobbers
        except FileExistsError:
            raise OutputError(f"the output {target} appeared while this command ran; it was not replaced") from None
        except OSError:  # filesystems without hard links
            os.rename(stage, target)
            return
        os.unlink(stage)
        return
    give_plain_modes(stage)
    if not exists:
        os.rename(stage, target)
        return
    old = target.parent / f".{target.name}.{_tag()}-{os.urandom(4).hex()}.partial"
    os.rename(target, old)
    try:
        os.rename(stage, target)
    except OSError:
        os.rename(old, target)  # put the old one back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
