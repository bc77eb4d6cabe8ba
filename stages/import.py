"""The import recipe, <checkpoint>@<cond>-<seed>: an existing checkpoint (a hub repository at its
pinned commit, or a local directory), recorded as a manifest of its files (`store: reference`) or
copied into the stage output (`store: copy`, for `dvc push`). Every reader verifies the files."""

from deltalab import paths, stage
from deltalab.atomic import atomic_dir
from deltalab.tensors.imports import import_checkpoint


def main(params, checkpoint: str, cond: str, seed: int) -> None:
    spec = stage.made_here(params, checkpoint, "import")
    source = spec.source_for(cond)
    with atomic_dir(paths.checkpoint(cond, seed, checkpoint)) as out:
        manifest = import_checkpoint(
            source.id,
            source.revision,
            out,
            store=spec.store,
            trust_remote_code=params.runtime.trust_remote_code,
        )
    size = sum(f["size"] for f in manifest["files"]) / 2**30
    print(
        f"{checkpoint}@{cond}-{seed}: {source.id}"
        + (f"@{source.revision[:12]}" if source.revision else "")
        + f": {len(manifest['files'])} files, {size:.2f} GiB ({manifest['format']}, "
        f"{'copied' if 'stored' in manifest else 'referenced'})"
    )


if __name__ == "__main__":
    stage.run(main, checkpoint=str, cond=str, seed=int)
