"""Generation engines behind one interface: the HF engine everywhere, the vLLM engine on CUDA
(skipped without it; DELTALAB_REQUIRE_VLLM=1 makes that skip a failure, so a GPU job cannot pass
by skipping), and the search's in-place weight updates through `Engine.load_weights`."""

from __future__ import annotations

import os

import pytest
import torch

from deltalab.errors import ConfigError
from deltalab.evaluation.engine import Engine, HFEngine, open_engine
from deltalab.evaluation.generation import generate_greedy
from deltalab.evaluation.prompts import format_prompt
from deltalab.evaluation.sampling import generate_samples
from deltalab.search.live_model import live_merge, open_live_model
from deltalab.search.params import SearchParams
from deltalab.search.voting import vote
from tests.evaluation_fixtures import questions, save_checkpoint
from tests.search_fixtures import build_search_workspace

VECTORS = ["sft.safetensors", "rlvr.safetensors"]


def _need_vllm() -> None:
    reason = None
    if not torch.cuda.is_available():
        reason = "no CUDA device"
    else:
        try:
            import vllm  # noqa: F401
        except ImportError:
            reason = "vllm is not installed"
    if reason:
        if os.environ.get("DELTALAB_REQUIRE_VLLM") == "1":
            pytest.fail(f"DELTALAB_REQUIRE_VLLM=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("engine") / "ckpt", seed=0)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return build_search_workspace(tmp_path_factory.mktemp("live"))


def test_hf_engine_is_the_batched_decoder(checkpoint):
    engine = open_engine(checkpoint, "hf")
    assert isinstance(engine, HFEngine)
    prompts = [format_prompt(engine.tokenizer, q) for q in questions(5)]
    greedy = engine.greedy(prompts, max_new_tokens=8, batch_size=2)
    assert greedy == generate_greedy(
        engine.model, engine.tokenizer, prompts, max_new_tokens=8, batch_size=5
    )
    kwargs = dict(n=3, max_new_tokens=6, temperature=0.9, top_p=1.0, seed=4)
    sampled = engine.sample(prompts, **kwargs, batch_size=6)
    assert sampled == generate_samples(engine.model, engine.tokenizer, prompts, **kwargs)
    confidence = engine.confidence(prompts, [g.token_ids for g in greedy], batch_size=4)
    assert [c.num_tokens for c in confidence] == [g.num_tokens for g in greedy]
    assert all(c.mean_logprob <= 0 and c.mean_entropy >= 0 for c in confidence)
    assert engine.prompt_perplexity(questions(5), batch_size=2) > 1.0


def test_vllm_without_cuda_is_an_error_naming_the_key(checkpoint):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="runtime.engine: vllm runs on CUDA only"):
        open_engine(checkpoint, "vllm")


def test_sample_seeds_are_per_question_and_sample():
    from deltalab.evaluation.vllm_engine import sample_seed

    seeds = {sample_seed(0, i, j) for i in range(50) for j in range(8)}
    assert len(seeds) == 400 and all(0 <= s < 2**63 for s in seeds)
    assert sample_seed(0, 3, 1) == sample_seed(0, 3, 1) != sample_seed(1, 3, 1)
    assert sample_seed(0, 3, 1) != sample_seed(0, 1, 3)


class _RecordingEngine(Engine):
    """An engine that only keeps the weights loaded into it (vLLM's side of the search)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.weights, self.loads = tokenizer, {}, 0

    def greedy(self, *args, **kwargs):
        raise NotImplementedError

    sample = confidence = prompt_perplexity = greedy

    def load_weights(self, weights) -> None:
        self.loads += 1
        for name, tensor in weights:
            self.weights[name] = tensor.clone()


def test_weights_loaded_into_another_engine_are_the_live_merge_bits(workspace, monkeypatch):
    """What the vLLM engine receives per trial equals, bit for bit, the HF model's weights after
    the same in-place merge; 100 trials later the base comes back exactly (no drift)."""
    monkeypatch.chdir(workspace)
    lm = open_live_model("base", VECTORS)
    other = _RecordingEngine(lm.tokenizer)
    live, targets = live_merge(other, lm.base, lm.vectors, dtype="float32", device="cpu")
    assert targets is not None and set(targets) == set(lm.live.slots)
    base = {n: p.detach().clone() for n, p in lm.model.state_dict().items()}
    scales = [(1.0, 1.0), (0.5, 2.0), (1.7, 0.6)] + [
        (0.5 + i / 50, 2.0 - i / 60) for i in range(97)
    ]
    for s in scales:
        lm.apply(s)
        live.apply(s)
        other.load_weights(targets.items())
        params = lm.model.state_dict()
        assert all(torch.equal(params[n], other.weights[n]) for n in targets)
    lm.apply([0.0, 0.0])
    live.apply([0.0, 0.0])
    other.load_weights(targets.items())
    assert all(torch.equal(other.weights[n], base[n]) for n in targets)
    assert other.loads == len(scales) + 1


def test_votes_come_from_the_engine(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    lm = open_live_model("base", VECTORS)
    cfg = SearchParams(votes=3, max_new_tokens=6, n_trials=4, population_size=2)
    first = vote(lm.engine, questions(3), cfg)
    assert len(first) == 3 and all(len(v) == 3 for v in first)
    assert vote(lm.engine, questions(3), cfg) == first  # seeded per (question, sample)


@pytest.mark.cuda
def test_vllm_engine_matches_the_hf_engine_greedy(checkpoint):
    _need_vllm()
    hf = open_engine(checkpoint, "hf", device="cuda", dtype="float32")
    vl = open_engine(checkpoint, "vllm", dtype="float32")
    prompts = [format_prompt(hf.tokenizer, q) for q in questions(16)]
    a = hf.greedy(prompts, max_new_tokens=16, batch_size=16)
    b = vl.greedy(prompts, max_new_tokens=16, batch_size=16)
    same = sum(x.token_ids == y.token_ids for x, y in zip(a, b, strict=True))
    assert same >= 14, f"{same}/16 greedy answers equal"  # fp32 kernels may flip a near-tie
    samples = vl.sample(prompts[:4], n=3, max_new_tokens=8, temperature=1.0, top_p=1.0, seed=0,
                        batch_size=12)  # fmt: skip
    again = vl.sample(prompts[:4], n=3, max_new_tokens=8, temperature=1.0, top_p=1.0, seed=0,
                      batch_size=12)  # fmt: skip
    assert samples == again  # seeded per (question, sample)
    assert vl.prompt_perplexity(questions(4), batch_size=4) == pytest.approx(
        hf.prompt_perplexity(questions(4), batch_size=4), rel=1e-3
    )


@pytest.mark.cuda
def test_vllm_weights_update_in_place(workspace, monkeypatch):
    _need_vllm()
    from deltalab.schema.runtime import RuntimeParams

    monkeypatch.chdir(workspace)
    runtime = RuntimeParams(device="cuda", engine="vllm")
    lm = open_live_model("base", VECTORS, runtime=runtime, dtype="float32")
    hf = open_live_model("base", VECTORS, runtime=RuntimeParams(device="cuda"), dtype="float32")
    prompts = [format_prompt(lm.tokenizer, q) for q in questions(8)]
    for s in ([1.0, 1.0], [2.0, 0.5], [0.0, 0.0]):
        lm.apply(s)
        hf.apply(s)
        a = lm.engine.greedy(prompts, max_new_tokens=8, batch_size=8)
        b = hf.engine.greedy(prompts, max_new_tokens=8, batch_size=8)
        assert sum(x.token_ids == y.token_ids for x, y in zip(a, b, strict=True)) >= 7


def test_a_cli_budget_past_the_context_is_capped_with_a_warning(checkpoint, capsys):
    from deltalab.errors import DataError

    engine = open_engine(checkpoint, "hf")  # a 256-position model
    capsys.readouterr()
    prompts = [format_prompt(engine.tokenizer, q) for q in questions(3)]
    longest = max(len(engine.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    assert engine.fit_new_tokens(prompts, 16) == 16
    assert "warning" not in capsys.readouterr().err
    assert engine.fit_new_tokens(prompts, 256) == 256 - longest
    assert f"capped at {256 - longest}" in capsys.readouterr().err
    with pytest.raises(DataError, match="the model's context is 256"):
        engine.fit_new_tokens(["word " * 300], 8)
