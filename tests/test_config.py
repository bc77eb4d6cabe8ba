"""The params schema: every profile validates; bad input fails early, naming key and value."""

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
