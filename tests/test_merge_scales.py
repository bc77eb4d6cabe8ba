"""The merge stage's library pieces: where its scales come from, and the dense reference merge."""

from __future__ import annotations

import json

import pytest

from deltalab.errors import DataError
from deltalab.search.merged import chosen_scales
from deltalab.search.params import MergeParams

CHOSEN = {"chosen": {"trial": 7, "scale_sft": 0.8, "scale_rlvr": 1.3}}


def test_the_search_choice_is_used_when_params_set_no_scale(tmp_path):
    path = tmp_path / "search.json"
    path.write_text(json.dumps(CHOSEN))
    assert chosen_scales(MergeParams(), path, "search@x") == ([0.8, 1.3], "search trial 7")


def test_each_scale_set_in_params_replaces_the_search_choice(tmp_path):
    path = tmp_path / "search.json"
    path.write_text(json.dumps(CHOSEN))
    scales, origin = chosen_scales(MergeParams(scale_rlvr=0.5), path, "search@x")
    assert scales == [0.8, 0.5]
    assert origin == "search trial 7 with scale_rlvr from params"


def test_both_scales_in_params_need_no_search(tmp_path):
    cfg = MergeParams(scale_sft=1.1, scale_rlvr=0.9)
    assert chosen_scales(cfg, tmp_path / "missing.json", "search@x") == ([1.1, 0.9], "params")


def test_a_missing_search_result_names_the_file_and_the_stage(tmp_path):
    with pytest.raises(DataError, match=r"missing.json: not found \(run `dvc repro search@b-3`\)"):
        chosen_scales(MergeParams(scale_sft=1.0), tmp_path / "missing.json", "search@b-3")
