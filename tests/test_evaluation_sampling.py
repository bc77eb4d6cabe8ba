"""Seeded batched sampling: exact against a cache-free reference loop, independent of batching;
teacher-forced confidence against an unbatched computation."""

from __future__ import annotations

import math

import pytest
import torch

from deltalab.errors import CheckpointError
from deltalab.evaluation.generation import generate_greedy
from deltalab.evaluation.sampling import (
    generate_samples,
    response_confidence,
    row_uniforms,
    sample_from_logits,
)

from .evaluation_fixtures import build_model, build_tokenizer, eval_prompts, tiny_lm

MAX_NEW = 8
N = 3


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: one thread is fastest, and much faster when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    return tiny_lm()


@pytest.fixture(scope="module")
def prompts():
    return eval_prompts(7)


@pytest.fixture(scope="module")
def samples(tiny, prompts):
    model, tokenizer = tiny
    return generate_samples(
        model, tokenizer, prompts, n=N, max_new_tokens=MAX_NEW, seed=5, batch_size=64
    )


def reference_sample(model, tokenizer, prompt, uniforms, temperature=1.0, top_p=1.0, eos=None):
    """Token by token, one sequence, no padding, no KV cache: full forward pass at every step."""
    eos = tokenizer.eos_token_id if eos is None else eos
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    new: list[int] = []
    with torch.inference_mode():
        for step in range(len(uniforms)):
            logits = model(input_ids=torch.tensor([ids + new])).logits[:, -1, :]
            u = torch.tensor([uniforms[step]])
            token = int(sample_from_logits(logits, u, temperature, top_p)[0])
            new.append(token)
            if token == eos:
                break
    return tuple(new)


# --------------------------------------------------------------------------- token choice


def test_inverse_cdf_matches_the_distribution() -> None:
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0, float("-inf")]])
    probs = torch.softmax(logits / 0.7, dim=-1)[0]
    grid = (torch.arange(20_000, dtype=torch.float64) + 0.5) / 20_000
    tokens = sample_from_logits(logits.expand(len(grid), -1), grid, 0.7)
    freq = torch.bincount(tokens, minlength=5).double() / len(grid)
    assert torch.allclose(freq, probs.double(), atol=1e-4)
    assert freq[4] == 0  # a -inf logit is never drawn


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.1, 0.5, 0.05, 0.3, 0.05]]))
    grid = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    tokens = sample_from_logits(logits.expand(len(grid), -1), grid, 1.0, top_p=0.7)
    freq = torch.bincount(tokens, minlength=5).double() / len(grid)
    assert set(tokens.tolist()) == {1, 3}  # 0.5 + 0.3 covers 0.7; the rest is cut
    assert freq[1] == pytest.approx(0.5 / 0.8, abs=2e-3)
    tiny = sample_from_logits(logits.expand(len(grid), -1), grid, 1.0, top_p=1e-6)
    assert set(tiny.tolist()) == {1}  # top-p -> 0 is greedy


def test_tiny_temperature_is_argmax() -> None:
    logits = torch.randn(64, 300, generator=torch.Generator().manual_seed(0))
    u = torch.rand(64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sample_from_logits(logits, u, 1e-5), logits.argmax(-1))


def test_extreme_uniforms_pick_tokens_of_positive_probability() -> None:
    logits = torch.tensor([[float("-inf"), 0.0, 0.0, float("-inf")]] * 2)
    u = torch.tensor([0.0, math.nextafter(1.0, 0.0)], dtype=torch.float64)
    assert sample_from_logits(logits, u, 1.0).tolist() == [1, 2]


def test_nan_logits_are_a_checkpoint_error() -> None:
    logits = torch.tensor([[0.0, float("nan"), 1.0]])
    with pytest.raises(CheckpointError, match="NaN"):
        sample_from_logits(logits, torch.tensor([0.5], dtype=torch.float64), 1.0)


def test_uniforms_are_seeded_per_row() -> None:
    a = row_uniforms(0, 3, 1, 16)
    assert (a == row_uniforms(0, 3, 1, 16)).all()
    assert (a[:4] == row_uniforms(0, 3, 1, 4)).all()  # a longer budget extends the stream
    for other in (row_uniforms(1, 3, 1, 16), row_uniforms(0, 1, 3, 16), row_uniforms(0, 3, 2, 16)):
        assert not (a == other).any()


# --------------------------------------------------------------------------- batched sampling


def test_batched_sampling_equals_the_cache_free_reference(tiny, prompts, samples) -> None:
    model, tokenizer = tiny
    for i in (0, 3, 6):
        for j in range(N):
            expected = reference_sample(
                model, tokenizer, prompts[i], row_uniforms(5, i, j, MAX_NEW)
            )
            assert samples[i][j].token_ids == expected
    assert len({g.token_ids for gens in samples for g in gens}) > len(prompts)  # samples differ


@pytest.mark.parametrize(
    "kwargs", [{"batch_size": 1}, {"batch_size": 7}, {"expand_cache": False, "batch_size": 5}]
)
def test_samples_do_not_depend_on_batching(tiny, prompts, samples, kwargs) -> None:
    model, tokenizer = tiny
    other = generate_samples(
        model, tokenizer, prompts, n=N, max_new_tokens=MAX_NEW, seed=5, **kwargs
    )
    assert other == samples


def test_seed_changes_samples_and_shape(tiny, prompts, samples) -> None:
    model, tokenizer = tiny
    other = generate_samples(model, tokenizer, prompts, n=N, max_new_tokens=MAX_NEW, seed=6)
    assert [len(s) for s in samples] == [N] * len(prompts)
    assert other != samples


def test_tiny_temperature_gives_the_greedy_answer(tiny, prompts) -> None:
    model, tokenizer = tiny
    greedy = generate_greedy(model, tokenizer, prompts, max_new_tokens=MAX_NEW)
    cold = generate_samples(
        model, tokenizer, prompts, n=2, max_new_tokens=MAX_NEW, temperature=1e-4
    )
    assert all(s == g for gens, g in zip(cold, greedy, strict=True) for s in gens)


def test_rows_stop_at_eos_and_leave_the_batch(tiny, prompts, samples, monkeypatch) -> None:
    """With a frequent token as EOS, samples stop at different steps; the cut and the rest of the
    batch match the reference; the same holds when rows cannot leave the cache."""
    from deltalab.evaluation import generation

    model, tokenizer = tiny
    counts: dict[int, int] = {}
    for gens in samples:
        for g in gens:
            for t in g.token_ids[1:5]:
                counts[t] = counts.get(t, 0) + 1
    eos = max(counts, key=lambda t: (counts[t], t))
    kwargs = dict(n=N, max_new_tokens=MAX_NEW, seed=5, eos_token_id=eos)
    stopped = generate_samples(model, tokenizer, prompts, **kwargs)
    lengths = {g.num_tokens for gens in stopped for g in gens if g.stopped}
    assert len(lengths) >= 2 and any(not g.stopped for gens in stopped for g in gens)
    for i in (0, 2, 5):
        for j in range(N):
            expected = reference_sample(
                model, tokenizer, prompts[i], row_uniforms(5, i, j, MAX_NEW), eos=eos
            )
            assert stopped[i][j].token_ids == expected
    monkeypatch.setattr(generation, "_rows_can_leave", lambda cache: False)
    assert generate_samples(model, tokenizer, prompts, **kwargs) == stopped  # falls back, rides


def test_bad_sampling_arguments(tiny, prompts) -> None:
    model, tokenizer = tiny
    assert generate_samples(model, tokenizer, [], n=2, max_new_tokens=4) == []
    for bad in ({"n": 0}, {"temperature": 0.0}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            generate_samples(model, tokenizer, prompts, **({"n": 2, "max_new_tokens": 4} | bad))


# --------------------------------------------------------------------------- confidence


def test_confidence_matches_an_unbatched_computation(tiny, prompts) -> None:
    model, tokenizer = tiny
    greedy = generate_greedy(model, tokenizer, prompts, max_new_tokens=MAX_NEW)
    # responses of different lengths, so rows are padded on both the prompt and response side
    responses = [g.token_ids[: 2 + i % 5] for i, g in enumerate(greedy)]
    batched = response_confidence(model, tokenizer, prompts, responses, batch_size=3)
    for prompt, response, conf in zip(prompts, responses, batched, strict=True):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids + list(response)])).logits[0]
        logp = torch.log_softmax(logits[len(ids) - 1 : -1], dim=-1)
        token_logp = logp[torch.arange(len(response)), torch.tensor(response)]
        entropy = -(logp.exp() * logp).sum(-1)
        assert conf.num_tokens == len(response)
        assert conf.mean_logprob == pytest.approx(float(token_logp.mean()), abs=1e-4)
        assert conf.mean_entropy == pytest.approx(float(entropy.mean()), abs=1e-4)
        # greedy tokens are the argmax of the teacher-forced distribution
        assert torch.equal(logp.argmax(-1), torch.tensor(response))
        assert conf.mean_logprob <= 0 < conf.mean_entropy


def test_nan_weights_are_a_checkpoint_error(prompts) -> None:
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=1)
    with torch.no_grad():
        model.transformer.ln_f.weight[0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN"):
        response_confidence(model, tokenizer, prompts[:2], [[1, 2], [3]])
    with pytest.raises(CheckpointError, match="NaN"):
        generate_samples(model, tokenizer, prompts[:2], n=2, max_new_tokens=3)
