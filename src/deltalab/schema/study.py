"""The study declaration (`study:` in a params file): every checkpoint and how it is made, and
which checkpoints each analysis reads. The one place that names model roles and conditions.

A checkpoint is made by a recipe — a stage script under `stages/` that reads the params section
of the same name — from a declared parent. `tools/render_pipeline.py` turns the declaration into
`dvc.yaml` (one stage per trained checkpoint, named after it), and the stages look their inputs
up here instead of naming them. Validation rejects an unknown parent, a cycle in the lineage and
any pair, list or triple that names a checkpoint the study does not declare, naming the key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

from pydantic import Field, model_validator

from deltalab.schema.base import Section, StrPair
from deltalab.schema.pinning import check_revision, unpinned_revision

# A stage script per recipe: stages/<recipe>.py, hyperparameters in the params section <recipe>.
Recipe = Literal[
    "import", "pretrain", "sft_tulu", "sft_gsm8k", "dpo", "rlvr", "masked_dpo", "merge"
]
# Recipes that train one checkpoint in a stage of its own, named after the checkpoint.
TRAINED: tuple[Recipe, ...] = ("pretrain", "sft_tulu", "sft_gsm8k", "dpo", "rlvr")
ROOTS: tuple[Recipe, ...] = ("import", "pretrain")  # recipes without a parent
Method = Literal["sft", "dpo", "rlvr"]  # the training method, for the published per-method numbers
METHOD_OF_RECIPE: dict[str, Method] = {
    "sft_tulu": "sft",
    "sft_gsm8k": "sft",
    "dpo": "dpo",
    "masked_dpo": "dpo",
    "rlvr": "rlvr",
}
Transform = Literal["none", "mul_tokens"]  # deltalab.tokens.text_transform
Matrix = Literal["all", "delta_track"]  # conditions × seeds, or the delta_track members


class ImportSource(Section):
    """Where an imported checkpoint comes from: a hub repository at a pinned commit, or a local
    directory (a path starting with `/`, `./`, `../` or `~`)."""

    id: str = Field(min_length=1, description="hub repo id (org/name) or local directory")
    revision: str | None = Field(
        None, description="hub ids: the 40-hex commit (null: not yet pinned, refused at run time)"
    )

    @model_validator(mode="after")
    def _revision(self) -> ImportSource:
        check_revision(self.id, self.revision)
        return self

    def unpinned(self) -> str | None:
        """Why this source is not pinned (None when it is)."""
        return unpinned_revision(self.id, self.revision)


class CheckpointSpec(Section):
    """How one checkpoint (`models/<cond>/seed<seed>/<name>/`) is made."""

    recipe: Recipe
    parent: str | None = Field(
        None, description="the checkpoint it starts from (none: pretrain from scratch or import)"
    )
    matrix: Matrix = Field("all", description="made for every condition × seed, or delta_track")
    method: Method | None = Field(
        None, description="training method of its delta (default: the recipe's)"
    )
    mask: str | None = Field(None, description="masked_dpo only: the mask it trains under")
    source: ImportSource | dict[str, ImportSource] | None = Field(
        None, description="import only: one source, or one per condition"
    )
    store: Literal["reference", "copy"] = Field(
        "reference",
        description="import only: a manifest of the source's files, or the files themselves "
        "in the stage output (DVC-cached, `dvc push`-able)",
    )

    @model_validator(mode="after")
    def _recipe_fields(self) -> CheckpointSpec:
        if (self.recipe == "masked_dpo") != (self.mask is not None):
            raise ValueError("mask is set exactly for the masked_dpo recipe")
        if (self.recipe in ROOTS) == (self.parent is not None):
            raise ValueError(
                "parent: every recipe but pretrain and import starts from a declared parent; "
                "those two have none"
            )
        if (self.recipe == "import") != (self.source is not None):
            raise ValueError("source is set exactly for the import recipe")
        if self.recipe != "import" and self.store != "reference":
            raise ValueError("store: only imported checkpoints are stored by reference or copy")
        return self

    def sources(self) -> dict[str, ImportSource]:
        """The import sources by their key under this checkpoint (`source`, `source.<cond>`)."""
        if isinstance(self.source, ImportSource):
            return {"source": self.source}
        return {f"source.{cond}": src for cond, src in (self.source or {}).items()}

    def source_for(self, cond: str) -> ImportSource:
        """The import source of one condition."""
        if isinstance(self.source, ImportSource):
            return self.source
        return self.source[cond]

    @property
    def delta_method(self) -> Method | None:
        return self.method or METHOD_OF_RECIPE.get(self.recipe)


class TaskVectorTriple(Section):
    """DoTS: τ_sft = sft − base and τ_rlvr = rlvr − base, merged as base + Σ scale · τ."""

    base: str
    sft: str
    rlvr: str


class BehaviorPlan(Section):
    models: list[str] = Field(min_length=1, description="checkpoints compared")
    pairs: list[StrPair] = Field(
        default_factory=list, description="paired comparisons (treatment, reference)"
    )


class StudyParams(Section):
    checkpoints: dict[str, CheckpointSpec] = Field(
        min_length=1, description="name → how it is made, in pipeline order"
    )
    transforms: dict[str, Transform] = Field(
        default_factory=dict, description="condition → text transform (unlisted: none)"
    )
    compare_conditions: StrPair | None = Field(
        None, description="(reference, treatment) conditions of the compare stage"
    )
    evaluate: list[str] = Field(
        default_factory=list, description="checkpoints evaluated for every condition × seed"
    )
    evaluate_track: list[str] = Field(
        default_factory=list, description="checkpoints evaluated for the delta_track members"
    )
    rivals: list[StrPair] = Field(
        default_factory=list,
        description="(reference, treatment) evaluated checkpoints compared beside their parents",
    )
    behavior: BehaviorPlan | None = None
    deltas: list[StrPair] = Field(
        default_factory=list, description="(base, finetuned) pairs of analyze_deltas"
    )
    contrast: list[StrPair] = Field(
        default_factory=list,
        description="(SFT-like, RL-like) delta labels compared with the published numbers",
    )
    task_vectors: TaskVectorTriple | None = None
    masks_from: str | None = Field(None, description="the DPO run whose deltas the masks score")

    @model_validator(mode="after")
    def _consistent(self) -> StudyParams:
        names = set(self.checkpoints)
        for key, name in self._references():
            if name not in names:
                raise ValueError(f"{key}: {name!r} is not a checkpoint of the study")
        for name in self.checkpoints:
            self.lineage(name)  # cycles
        for name, spec in self.checkpoints.items():
            if (
                spec.matrix == "all"
                and spec.parent
                and self.checkpoints[spec.parent].matrix != "all"
            ):
                raise ValueError(
                    f"checkpoints.{name}: made for every member, but its parent "
                    f"{spec.parent!r} only for delta_track"
                )
        for key, listed, matrix in (
            ("evaluate", self.evaluate, "all"),
            ("evaluate_track", self.evaluate_track, "delta_track"),
        ):
            if len(set(listed)) != len(listed):
                raise ValueError(f"{key} has duplicates: {listed}")
            wrong = [n for n in listed if self.checkpoints[n].matrix != matrix]
            if wrong:
                raise ValueError(f"{key}: {', '.join(wrong)} not made for the {matrix} matrix")
        if self.behavior:
            for pair in self.behavior.pairs:
                missing = [m for m in pair if m not in self.behavior.models]
                if pair[0] == pair[1] or missing:
                    raise ValueError(f"behavior.pairs: {list(pair)} must name two of its models")
        labels = {label: base for label, base, _ in self.delta_labels()}
        for pair in self.contrast:
            unknown = [x for x in pair if x not in labels]
            if pair[0] == pair[1] or unknown:
                raise ValueError(
                    f"contrast: {list(pair)} must name two different delta labels of "
                    f"study.deltas ({', '.join(sorted(labels)) or 'none'})"
                )
            if labels[pair[0]] != labels[pair[1]]:
                raise ValueError(
                    f"contrast: {list(pair)} have different bases ({labels[pair[0]]}, "
                    f"{labels[pair[1]]}); only deltas of one base are compared head-to-head"
                )
        if self.masks_from:
            if self.checkpoints[self.masks_from].recipe != "dpo":
                raise ValueError(f"masks_from: {self.masks_from!r} is not made by the dpo recipe")
            parent = self.checkpoints[self.masks_from].parent
            for name in self.made_by("masked_dpo"):
                if self.checkpoints[name].parent != parent:
                    raise ValueError(
                        f"checkpoints.{name}.parent: masked DPO trains from the parent of the "
                        f"masks' run ({parent!r})"
                    )
        elif self.made_by("masked_dpo"):
            raise ValueError("masks_from: masked_dpo checkpoints need the run the masks come from")
        if len(self.made_by("merge")) > 1:
            raise ValueError(f"checkpoints: one merge per study, got {self.made_by('merge')}")
        if self.made_by("merge") and not self.task_vectors:
            raise ValueError("task_vectors: a merge checkpoint needs the task-vector triple")
        for name in self.made_by("merge"):
            if self.checkpoints[name].parent != self.task_vectors.base:
                raise ValueError(
                    f"checkpoints.{name}.parent: a merge starts from task_vectors.base "
                    f"({self.task_vectors.base!r})"
                )
        return self

    def _references(self) -> Iterator[tuple[str, str]]:
        for name, spec in self.checkpoints.items():
            if spec.parent:
                yield f"checkpoints.{name}.parent", spec.parent
        for key in ("evaluate", "evaluate_track"):
            for name in getattr(self, key):
                yield key, name
        for key in ("rivals", "deltas"):
            for pair in getattr(self, key):
                for name in pair:
                    yield key, name
        if self.behavior:
            for name in self.behavior.models:
                yield "behavior.models", name
        if self.task_vectors:
            for role, name in self.task_vectors.model_dump().items():
                yield f"task_vectors.{role}", name
        if self.masks_from:
            yield "masks_from", self.masks_from

    def lineage(self, name: str) -> list[str]:
        """`name`, its parent, the parent's parent, ... (a cycle is an error naming it)."""
        chain = [name]
        while (parent := self.checkpoints[chain[-1]].parent) is not None:
            if parent in chain:
                raise ValueError(
                    f"checkpoints: the lineage has a cycle: {' → '.join(chain)} → {parent}"
                )
            chain.append(parent)
        return chain

    def made_by(self, recipe: Recipe) -> list[str]:
        return made_by(self.checkpoints, recipe)

    def delta_labels(self) -> list[tuple[str, str, str]]:
        return delta_labels(self.deltas)


# Functions of one field each, so that a stage reading them reads (and DVC tracks) that field only.


def made_by(checkpoints: Mapping[str, CheckpointSpec], recipe: Recipe) -> list[str]:
    """The checkpoints a recipe makes, in declaration order."""
    return [n for n, spec in checkpoints.items() if spec.recipe == recipe]


def delta_labels(deltas: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(label, base, finetuned) of each pair of `deltas`: the label is the finetuned name, or
    `<finetuned>_from_<base>` when that name is the finetuned side of several pairs."""
    finetuned = [ft for _, ft in deltas]
    return [
        (ft if finetuned.count(ft) == 1 else f"{ft}_from_{base}", base, ft) for base, ft in deltas
    ]


def delta_methods(
    deltas: Sequence[tuple[str, str]], checkpoints: Mapping[str, CheckpointSpec]
) -> dict[str, Method]:
    """Delta label → training method of its finetuned checkpoint (from the declaration)."""
    methods = {}
    for label, _, ft in delta_labels(deltas):
        if method := checkpoints[ft].delta_method:
            methods[label] = method
    return methods
