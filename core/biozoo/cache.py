"""The model cache is the Hugging Face Hub cache: list and remove what biozoo downloaded."""

from __future__ import annotations

from typing import Any

from biozoo.errors import HubError
from biozoo.manifest.io import MANIFEST_NAME


def list_cached() -> list[dict[str, Any]]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir()
    except CacheNotFound:
        return []
    rows = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        rows.append(
            {
                "repo": repo.repo_id,
                "commits": sorted(r.commit_hash for r in repo.revisions),
                "size": repo.size_on_disk_str,
                "biozoo": any(f.file_name == MANIFEST_NAME for r in repo.revisions for f in r.files),
                "path": str(repo.repo_path),
            }
        )
    return rows


def remove(spec: str) -> str:
    """Remove ``ORG/NAME`` (every commit) or ``ORG/NAME@COMMIT``; returns the freed size."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    repo_id, _, commit = spec.partition("@")
    try:
        info = scan_cache_dir()
    except CacheNotFound:
        info = None
    repos = [r for r in (info.repos if info else []) if r.repo_id == repo_id and r.repo_type == "model"]
    if not repos:
        raise HubError(f"{repo_id} is not in the cache", "`zoo cache ls` lists what is cached")
    hashes = [r.commit_hash for r in repos[0].revisions if not commit or r.commit_hash.startswith(commit)]
    if not hashes:
        raise HubError(f"{repo_id} has no cached commit {commit!r}", "`zoo cache ls` lists the cached commits")
    strategy = info.delete_revisions(*hashes)
    strategy.execute()
    return strategy.expected_freed_size_str
