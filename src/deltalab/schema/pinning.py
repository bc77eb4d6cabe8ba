"""Hub sources pinned to a commit: how a local path is told from a hub id, and what counts as
pinned (a 40-hex commit; a branch or tag moves under the study)."""

from __future__ import annotations

import re

COMMIT = re.compile(r"^[0-9a-f]{40}$")
LOCAL_PREFIXES = ("/", "./", "../", "~")  # how a local path is told from a hub id (`org/name`)


def is_local_source(source_id: str) -> bool:
    return source_id.startswith(LOCAL_PREFIXES)


def unpinned_revision(source_id: str, revision: str | None) -> str | None:
    """Why a hub source is not pinned to a commit (None when it is, or is a local path)."""
    if is_local_source(source_id) or (revision is not None and COMMIT.match(revision)):
        return None
    return (
        f"{source_id!r} is not pinned (got {revision!r}); set the 40-hex commit it was studied "
        f"at (the repository's history on the hub, or the snapshot `hf download {source_id}` "
        "resolves)"
    )


def check_revision(source_id: str, revision: str | None) -> None:
    """`null` means "not yet pinned": the params are valid and every stage refuses to run
    (`Params.unpinned`). Anything else must be a 40-hex commit of a hub id: a branch or tag
    moves, and a local path has no revisions."""
    if revision is None:
        return
    if is_local_source(source_id):
        raise ValueError(f"revision: {source_id!r} is a local path; revisions are hub-only")
    if why := unpinned_revision(source_id, revision):
        raise ValueError(f"revision: {why}")
