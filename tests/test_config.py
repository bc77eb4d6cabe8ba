"""The params schema: every profile validates; bad input fails early, naming key and value."""

import inspect
from pathlib import Path

import pytest
import yaml

from deltalab.cli import main as cli
from deltalab.config import load_params, parse_params
from deltalab.errors import ConfigError
from tests.tiny import tiny_raw

ROOT = Path(__file__).resolve().parents[1]
PROFILES = [ROOT / "params.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_every_profile_is_valid(path):
    params = load_params(path)
    assert params.conditions and params.seeds


def test_nothing_of_a_study_is_a_schema_default():
    # conditions, the delta track and the study are declared by each profile, never assumed
    with pytest.raises(ConfigError) as err:
        parse_params({})
    for key in ("conditions: Field required", "study: Field required", "delta_track: Field"):
        assert key in str(err.value)


@pytest.mark.parametrize(
    ("raw", "key", "detail"),
    [
        ({"pretrain": {"learning_rate": "fast"}}, "pretrain.learning_rate", "'fast'"),
        ({"sft_tulu": {"max_steps": 1.5}}, "sft_tulu.max_steps", "1.5"),
        ({"sft_tulu": {"max_steps": "100"}}, "sft_tulu.max_steps", "'100'"),  # no coercion
        ({"sft_gsm8k": {"warmup_ratio": 1.5}}, "sft_gsm8k.warmup_ratio", "1.5"),
        ({"model": {"n_layer": 0}}, "model.n_layer", "0"),
        ({"sft_tulu": {"lerning_rate": 1e-3}}, "sft_tulu.lerning_rate", "unknown key"),
        ({"surprise": 1}, "surprise", "unknown key"),
        ({"conditions": ["baseline", "bad name"]}, "conditions.1", "'bad name'"),
        ({"data": {"sizes": {"gsm8k_test": -1}}}, "data.sizes.gsm8k_test", "-1"),
    ],
)
def test_bad_values_name_the_key_and_value(raw, key, detail):
    with pytest.raises(ConfigError) as err:
        parse_params(tiny_raw(raw))
    message = str(err.value)
    assert key in message and detail in message


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ({"seeds": [0, 0]}, "duplicates"),
        ({"delta_track": {"conditions": ["mul_tokens"]}, "conditions": ["baseline"]}, "mul_tokens"),
        ({"model": {"n_embd": 100, "n_head": 3}}, "n_head"),
        ({"model": {"n_positions": 64}, "sft_gsm8k": {"max_length": 128}}, "n_positions"),
        ({"data": {"source": "hub"}}, "data.source=hub needs data.gsm8k"),
        ({"data": {"prefs": {"name": "org/p", "revision": "a" * 40}}}, "hub datasets need"),
        ({"tokenizer": {"source": "hub", "hub_id": "gpt2"}}, "revision"),
    ],
)
def test_inconsistent_params_are_rejected(raw, detail):
    with pytest.raises(ConfigError, match=detail):
        parse_params(tiny_raw(raw))


def test_yaml_12_floats(tmp_path):
    # PyYAML alone reads `2e-4` as a string; DVC (YAML 1.2) reads a float. We agree with DVC.
    path = tmp_path / "p.yaml"
    text = yaml.safe_dump(tiny_raw({"sft_tulu": {"learning_rate": "LR"}}))
    path.write_text(text.replace("learning_rate: LR", "learning_rate: 2e-4"))
    assert load_params(path).sft_tulu.learning_rate == pytest.approx(2e-4)


def test_params_check_cli(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(tiny_raw({"seeds": [0, 1]})))
    assert cli(["params", "check", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_raw({"pretrain": {"max_stepz": 10}})))
    assert cli(["params", "check", str(bad)]) == 2
    assert "pretrain.max_stepz: unknown key" in capsys.readouterr().err
    assert cli(["params", "check", str(tmp_path / "missing.yaml")]) == 2


# --------------------------------------------------------------------------------------------------
# Shared sections (deltalab.schema): reused by inheritance, same keys, same ranges
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["compare", "behavior", "merge"])
@pytest.mark.parametrize(
    ("key", "bad"), [("n_bootstrap", 99), ("confidence", 0.5), ("seed", -1), ("seed", "0")]
)
def test_bootstrap_fields_keep_their_ranges_in_every_section(section, key, bad):
    with pytest.raises(ConfigError) as err:
        parse_params(tiny_raw({section: {key: bad}}))
    assert f"{section}.{key}" in str(err.value) and repr(bad) in str(err.value)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"behavior": {"temperature": 10.5}}, "behavior.temperature"),
        ({"behavior": {"batch_size": 4097}}, "behavior.batch_size"),  # behavior's own bound
        ({"search": {"temperature": 2.5}}, "search.temperature"),  # voting's own bound
        ({"difficulty": {"top_p": 0.0}}, "difficulty.top_p"),
        ({"search": {"max_new_tokens": 8193}}, "search.max_new_tokens"),
        ({"difficulty": {"samples": 3}}, "difficulty.samples"),  # `votes` there, no `samples`
    ],
)
def test_sampling_fields_keep_each_sections_ranges(raw, key):
    with pytest.raises(ConfigError, match=key):
        parse_params(tiny_raw(raw))
    assert parse_params(tiny_raw({"search": {"batch_size": 8192}})).search.batch_size == 8192


def test_sampling_kwargs_pass_each_sections_numbers():
    params = load_params(ROOT / "params.yaml")
    behavior, search = params.behavior, params.search
    assert behavior.sampling_kwargs() == {
        "n": behavior.samples, "max_new_tokens": behavior.max_new_tokens,
        "temperature": behavior.temperature, "top_p": behavior.top_p, "seed": behavior.seed,
        "batch_size": behavior.batch_size,
    }  # fmt: skip
    for cfg in (params.difficulty, search):
        assert cfg.sampling_kwargs() == {
            "n": cfg.votes, "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
            "top_p": cfg.top_p, "seed": cfg.seed, "batch_size": cfg.batch_size,
        }  # fmt: skip


def test_sample_command_passes_generate_samples_defaults():
    from deltalab.evaluation.params import SampleParams
    from deltalab.evaluation.sampling import generate_samples

    defaults = inspect.signature(generate_samples).parameters
    flags = SampleParams(samples=2, temperature=20.0, max_new_tokens=9000, seed=3)
    kwargs = flags.sampling_kwargs()
    assert kwargs == {
        "n": 2, "max_new_tokens": 9000, "temperature": 20.0, "seed": 3,
        "top_p": defaults["top_p"].default, "batch_size": defaults["batch_size"].default,
    }  # fmt: skip


def test_study_pairs_are_yaml_lists_and_scalars_are_strict(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump(tiny_raw({"study": {"deltas": [["pretrain", "sft_tulu"]], "contrast": []}}))
    )
    assert load_params(path).study.deltas == [("pretrain", "sft_tulu")]
    for bad in ({"study": {"deltas": [["a", "b", "c"]]}}, {"study": {"deltas": [["pretrain", 1]]}}):
        with pytest.raises(ConfigError, match="study.deltas"):
            parse_params(tiny_raw(bad))
    with pytest.raises(ConfigError, match="analyze_deltas.seed"):
        parse_params(tiny_raw({"analyze_deltas": {"seed": "0"}}))


# --------------------------------------------------------------------------------------------------
# The study declaration (deltalab.schema.study): lineage checked before any stage runs
# --------------------------------------------------------------------------------------------------


def _ckpt(name: str, **spec) -> dict:
    return {"study": {"checkpoints": {name: spec}}}


@pytest.mark.parametrize(
    ("override", "detail"),
    [
        (_ckpt("sft_tulu", parent="sft_gsm8k"), "cycle: sft_tulu → sft_gsm8k → sft_tulu"),
        (
            _ckpt("rlvr", parent="sft_tula"),
            "checkpoints.rlvr.parent: 'sft_tula' is not a checkpoint",
        ),
        ({"study": {"deltas": [["sft_tulu", "ghost"]]}}, "deltas: 'ghost' is not a checkpoint"),
        ({"study": {"evaluate": ["pretrain", "nope"]}}, "evaluate: 'nope' is not a checkpoint"),
        ({"study": {"task_vectors": {"base": "x"}}}, "task_vectors.base: 'x' is not a checkpoint"),
        ({"study": {"masks_from": "rlvr"}}, "masks_from: 'rlvr' is not made by the dpo recipe"),
        ({"study": {"evaluate": ["rlvr"]}}, "evaluate: rlvr not made for the all matrix"),
        (_ckpt("dpo", parent="pretrain"), "masked DPO trains from the parent of the masks' run"),
        (_ckpt("merged", parent="sft_gsm8k"), "a merge starts from task_vectors.base"),
        (
            _ckpt("pretrain", parent="sft_tulu"),
            "but pretrain and import starts from a declared parent",
        ),
        (_ckpt("masked_dpo", mask="fisher_v2"), "'fisher_v2' is not built"),
        (_ckpt("masked_dpo", recipe="dpo"), "mask is set exactly for the masked_dpo recipe"),
        (_ckpt("sft_tulu", recipe="distill"), "study.checkpoints.sft_tulu.recipe"),
        ({"study": {"transforms": {"mul_tokens": "upper"}}}, "study.transforms.mul_tokens"),
        ({"study": {"transforms": {"other": "none"}}}, "'other' is not in conditions"),
        ({"study": {"compare_conditions": ["baseline", "x"]}}, "compare_conditions: 'x'"),
        ({"study": {"contrast": [["rlvr", "sft_gsm8k"]]}}, None),  # two deltas of one base: ok
        (
            {"study": {"contrast": [["sft_gsm8k", "dpo"]]}},
            "have different bases (sft_tulu, sft_gsm8k)",
        ),
        (_ckpt("sft_tulu", matrix="delta_track"), "its parent 'sft_tulu' only for delta_track"),
    ],
)
def test_study_declaration_errors_name_the_key(override, detail):
    if detail is None:
        parse_params(tiny_raw(override))
        return
    with pytest.raises(ConfigError) as err:
        parse_params(tiny_raw(override))
    assert detail in str(err.value)


def test_study_declares_methods_and_labels_from_recipes():
    from deltalab.schema.study import delta_labels, delta_methods

    study = load_params(ROOT / "params.yaml").study
    assert delta_methods(study.deltas, study.checkpoints) == {
        "sft_tulu": "sft", "sft_gsm8k": "sft", "rlvr": "rlvr", "dpo": "dpo",
    }  # fmt: skip
    # the same finetuned name from two bases gets `<ft>_from_<base>` labels
    pairs = [("pretrain", "sft_gsm8k"), ("sft_tulu", "sft_gsm8k")]
    assert [label for label, _, _ in delta_labels(pairs)] == [
        "sft_gsm8k_from_pretrain", "sft_gsm8k_from_sft_tulu",
    ]  # fmt: skip
    assert study.lineage("masked_dpo") == ["masked_dpo", "sft_gsm8k", "sft_tulu", "pretrain"]
