"""The params schema: every profile validates; bad input fails early, naming key and value."""

import inspect
from pathlib import Path

import pytest
import yaml

from deltalab.cli import main as cli
from deltalab.config import load_params, parse_params
from deltalab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PROFILES = [ROOT / "params.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_every_profile_is_valid(path):
    params = load_params(path)
    assert params.conditions and params.seeds


def test_defaults_are_the_study_conditions():
    params = parse_params({})
    assert params.conditions == ["baseline", "mul_tokens"]
    assert params.delta_track.conditions == ["baseline"]


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
        ({"conditions": ["baseline", "typo"]}, "conditions.1", "'typo'"),
        ({"data": {"sizes": {"gsm8k_test": -1}}}, "data.sizes.gsm8k_test", "-1"),
    ],
)
def test_bad_values_name_the_key_and_value(raw, key, detail):
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    message = str(err.value)
    assert key in message and detail in message


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ({"seeds": [0, 0]}, "duplicates"),
        ({"delta_track": {"conditions": ["mul_tokens"]}, "conditions": ["baseline"]}, "mul_tokens"),
        ({"model": {"n_embd": 100, "n_head": 3}}, "n_head"),
        ({"model": {"n_positions": 64}, "sft_gsm8k": {"max_length": 128}}, "n_positions"),
        ({"data": {"source": "hub"}}, "data.tulu"),
        ({"tokenizer": {"source": "hub", "hub_id": "gpt2"}}, "revision"),
    ],
)
def test_inconsistent_params_are_rejected(raw, detail):
    with pytest.raises(ConfigError, match=detail):
        parse_params(raw)


def test_yaml_12_floats(tmp_path):
    # PyYAML alone reads `2e-4` as a string; DVC (YAML 1.2) reads a float. We agree with DVC.
    path = tmp_path / "p.yaml"
    path.write_text("sft_tulu:\n  learning_rate: 2e-4\n")
    assert load_params(path).sft_tulu.learning_rate == pytest.approx(2e-4)


def test_params_check_cli(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"seeds": [0, 1]}))
    assert cli(["params", "check", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain:\n  max_stepz: 10\n")
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
        parse_params({section: {key: bad}})
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
        parse_params(raw)
    assert parse_params({"search": {"batch_size": 8192}}).search.batch_size == 8192


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


def test_analyze_deltas_pairs_are_yaml_lists_and_scalars_are_strict(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("analyze_deltas:\n  pairs: [[pretrain, sft_tulu]]\n  contrast: []\n")
    assert load_params(path).analyze_deltas.pairs == [("pretrain", "sft_tulu")]
    for bad in ({"pairs": [["a", "b", "c"]]}, {"pairs": [["a", 1]]}, {"seed": "0"}):
        with pytest.raises(ConfigError, match="analyze_deltas"):
            parse_params({"analyze_deltas": bad})
