"""Batched greedy generation must equal one-at-a-time greedy generation, token for token."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GenerationConfig

from deltalab.errors import DataError
from deltalab.evaluation.generation import (
    Generation,
    _finish,
    generate_greedy,
    generate_one_at_a_time,
)
from deltalab.evaluation.prompts import format_prompt, plain_prompt

from .evaluation_fixtures import build_model, build_tokenizer, eval_prompts, tiny_lm

MAX_NEW = 10


@pytest.fixture(scope="module")
def tiny():
    return tiny_lm()


@pytest.fixture(scope="module")
def prompts():
    return eval_prompts(9)


@pytest.fixture(scope="module")
def reference(tiny, prompts):
    model, tokenizer = tiny
    return generate_one_at_a_time(model, tokenizer, prompts, max_new_tokens=MAX_NEW)


@pytest.fixture(scope="module")
def stops(reference):
    """Three EOS ids that end different rows at different steps."""
    return sorted({ref.token_ids[3] for ref in reference[:2]} | {reference[4].token_ids[6]})


def test_prompt_format() -> None:
    assert plain_prompt("What is 2+2?") == "User: What is 2+2?\nAssistant:"


def _with_bos(tokenizer, template: str | None, adds_bos: bool):
    """A copy of `tokenizer` with a BOS token, a chat template, and a post-processor that adds
    BOS to plain text (Llama, Gemma) or not (GPT-2, Qwen)."""
    from tokenizers import processors

    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"bos_token": "<bos>"})
    bos = tok.bos_token_id
    if adds_bos:
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", bos)]
        )
    tok.chat_template = template
    return tok


GEMMA_LIKE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_prompts_use_the_checkpoints_chat_template_and_bos(tiny) -> None:
    _, tokenizer = tiny
    q = "What is 2+2?"
    assert format_prompt(tokenizer, q) == plain_prompt(q)  # no template, no BOS: ours
    gemma = _with_bos(tokenizer, GEMMA_LIKE, adds_bos=True)
    text = format_prompt(gemma, q)
    assert text == "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"
    ids = gemma(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == gemma.bos_token_id and ids.count(gemma.bos_token_id) == 1  # BOS once
    qwen = _with_bos(tokenizer, CHATML, adds_bos=False)
    assert (
        format_prompt(qwen, q)
        == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    base_llama = _with_bos(tokenizer, None, adds_bos=True)  # a base model: no template, BOS
    assert format_prompt(base_llama, q) == "<bos>" + plain_prompt(q)


def test_generation_stops_at_every_eos_of_the_generation_config(tiny, prompts, stops) -> None:
    """Gemma's `eos_token_id: [1, 106]`: a model that ends its turn with the second id stops."""
    model, tokenizer = tiny
    explicit = generate_greedy(
        model,
        tokenizer,
        prompts,
        max_new_tokens=MAX_NEW,
        eos_token_id=[tokenizer.eos_token_id, *stops],
    )
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = list(stops)
    try:
        configured = generate_greedy(model, tokenizer, prompts, max_new_tokens=MAX_NEW)
        single = generate_one_at_a_time(model, tokenizer, prompts, max_new_tokens=MAX_NEW)
    finally:
        model.generation_config.eos_token_id = saved
    assert configured == explicit == single
    assert all(g.stopped for g in configured)


def test_prompts_have_different_lengths(tiny, prompts) -> None:
    _, tokenizer = tiny
    lengths = {len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts}
    assert len(lengths) >= 4  # otherwise the left-padding test proves nothing


def test_batched_equals_one_at_a_time(tiny, prompts, reference) -> None:
    model, tokenizer = tiny
    # batch size 4 over 9 prompts: uneven last batch, padding in every batch
    batched = generate_greedy(model, tokenizer, prompts, max_new_tokens=MAX_NEW, batch_size=4)
    assert batched == reference
    assert all(not g.stopped and g.num_tokens == MAX_NEW for g in batched)
    assert len({g.token_ids for g in batched}) > 1  # outputs depend on the prompt


def test_per_sequence_stop_at_eos_when_pad_is_eos(tiny, prompts, reference) -> None:
    """Make a token the first prompt emits at step 3 the EOS (and pad) token of the tokenizer."""
    model, _ = tiny
    tokenizer = build_tokenizer()
    first = reference[0].token_ids
    step = next(i for i in range(2, MAX_NEW) if first[i] not in first[:i])
    stop_id = first[step]
    stop_token = tokenizer.convert_ids_to_tokens(stop_id)
    tokenizer.eos_token = stop_token
    tokenizer.pad_token = stop_token
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == stop_id

    batched = generate_greedy(model, tokenizer, prompts, max_new_tokens=MAX_NEW, batch_size=3)
    single = generate_one_at_a_time(model, tokenizer, prompts, max_new_tokens=MAX_NEW)
    assert batched == single
    assert batched[0].stopped and batched[0].token_ids == first[: step + 1]
    for gen, ref in zip(batched, reference, strict=True):
        if stop_id in ref.token_ids:
            cut = ref.token_ids.index(stop_id) + 1
            assert gen.stopped and gen.token_ids == ref.token_ids[:cut]
        else:  # padding after other rows stopped must not look like a stop
            assert not gen.stopped and gen.token_ids == ref.token_ids
    assert any(not g.stopped for g in batched)  # the batch mixed stopped and running rows


def test_pad_different_from_eos(prompts) -> None:
    tokenizer = build_tokenizer(pad_equals_eos=False)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    model = build_model(tokenizer, seed=3)
    batched = generate_greedy(model, tokenizer, prompts[:5], max_new_tokens=6, batch_size=5)
    assert batched == generate_one_at_a_time(model, tokenizer, prompts[:5], max_new_tokens=6)


def test_finish_cuts_at_first_eos_and_keeps_mul_tokens(tiny) -> None:
    _, tokenizer = tiny
    eos = tokenizer.eos_token_id
    mul = tokenizer.convert_tokens_to_ids("<MUL_6_9_54>")
    body = tokenizer(" so", add_special_tokens=False)["input_ids"] + [mul]
    gen = _finish(tokenizer, [*body, eos, eos, eos], [eos])
    assert gen == Generation(text=" so<MUL_6_9_54>", token_ids=(*body, eos), stopped=True)
    assert gen.num_tokens == len(body) + 1
    running = _finish(tokenizer, body, [eos])
    assert not running.stopped and running.num_tokens == len(body)


def test_context_overflow_is_a_clear_error(prompts) -> None:
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, n_positions=24)
    with pytest.raises(DataError, match="context of 24 positions"):
        generate_greedy(model, tokenizer, prompts, max_new_tokens=20)


def test_bad_arguments(tiny, prompts) -> None:
    model, tokenizer = tiny
    assert generate_greedy(model, tokenizer, [], max_new_tokens=4) == []
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_greedy(model, tokenizer, prompts, max_new_tokens=0)
    with pytest.raises(ValueError, match="batch_size"):
        generate_greedy(model, tokenizer, prompts, max_new_tokens=4, batch_size=0)


def naive_greedy(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[tuple]:
    """Independent reference: whole sequence re-run every step, no cache, no padding, argmax."""
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            new: list[int] = []
            while len(new) < max_new_tokens and tokenizer.eos_token_id not in new:
                logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1]
                new.append(int(logits.double().argmax()))
            out.append(tuple(new))
    return out


def test_checkpoint_generation_config_does_not_leak(prompts, monkeypatch) -> None:
    """A saved generation_config (sampling, penalties, suppressed tokens) must not alter greedy:
    `generate` gets exactly greedy settings with this call's budget, EOS and pad, and sees none
    of the checkpoint's own config."""
    tokenizer = build_tokenizer(pad_equals_eos=False)  # a wrong pad id cannot pass as EOS
    model = build_model(tokenizer, seed=3)
    expected = naive_greedy(model, tokenizer, prompts[:5], MAX_NEW)
    saved = model.generation_config
    saved.do_sample, saved.temperature, saved.top_k = True, 3.0, 5
    saved.repetition_penalty, saved.no_repeat_ngram_size = 5.0, 1
    saved.suppress_tokens = sorted({t for ids in expected for t in ids})
    saved.max_new_tokens, saved.pad_token_id = 2, tokenizer.eos_token_id

    calls = []
    real_generate = model.generate

    def spy(*args, **kwargs):
        calls.append((kwargs["generation_config"], model.generation_config.to_diff_dict()))
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy, raising=False)
    single = generate_one_at_a_time(model, tokenizer, prompts[:5], max_new_tokens=MAX_NEW)
    assert len(calls) == 5
    for config, hidden in calls:
        assert (config.do_sample, config.num_beams, config.max_new_tokens) == (False, 1, MAX_NEW)
        assert config.eos_token_id == tokenizer.eos_token_id
        assert config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id
        assert config.use_cache is True
        assert hidden == GenerationConfig().to_diff_dict()  # the checkpoint's config is hidden
    assert [g.token_ids for g in single] == expected
    batched = generate_greedy(model, tokenizer, prompts[:5], max_new_tokens=MAX_NEW, batch_size=2)
    assert [g.token_ids for g in batched] == expected
    assert model.generation_config is saved  # restored afterwards
    assert max(len(ids) for ids in expected) == MAX_NEW  # the budget was reached


def test_several_eos_ids_drop_rows_at_different_steps(tiny, prompts, stops) -> None:
    """Rows leave the batch (and its KV cache) at their own EOS; the rest decode on unchanged."""
    model, tokenizer = tiny
    batched = generate_greedy(
        model, tokenizer, prompts, max_new_tokens=MAX_NEW, batch_size=9, eos_token_id=stops
    )
    single = generate_one_at_a_time(
        model, tokenizer, prompts, max_new_tokens=MAX_NEW, eos_token_id=stops
    )
    assert batched == single
    assert all(g.stopped for g in batched)
    assert len({g.num_tokens for g in batched}) >= 3  # rows left the batch at different steps


def test_one_new_token_and_eos_at_the_first_step(tiny, prompts, reference) -> None:
    model, tokenizer = tiny
    one = generate_greedy(model, tokenizer, prompts, max_new_tokens=1, batch_size=4)
    assert [g.token_ids for g in one] == [r.token_ids[:1] for r in reference]
    first = reference[0].token_ids[0]
    batched = generate_greedy(
        model, tokenizer, prompts, max_new_tokens=MAX_NEW, batch_size=9, eos_token_id=first
    )
    assert batched[0].stopped and batched[0].token_ids == (first,)
    assert batched == generate_one_at_a_time(
        model, tokenizer, prompts, max_new_tokens=MAX_NEW, eos_token_id=first
    )


def test_rows_ride_along_when_the_cache_cannot_drop_them(tiny, prompts, stops, monkeypatch):
    """Static / linear-attention caches keep finished rows in the batch; results are the same."""
    from deltalab.evaluation import generation

    model, tokenizer = tiny
    cache = model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True).past_key_values
    assert generation._rows_can_leave(cache)  # GPT-2's DynamicCache: the dropping path ran above
    dropped = generate_greedy(
        model, tokenizer, prompts, max_new_tokens=MAX_NEW, batch_size=9, eos_token_id=stops
    )
    monkeypatch.setattr(generation, "_rows_can_leave", lambda cache: False)
    kept = generate_greedy(
        model, tokenizer, prompts, max_new_tokens=MAX_NEW, batch_size=9, eos_token_id=stops
    )
    assert kept == dropped and len({g.num_tokens for g in kept}) >= 3


def _family_model(tokenizer, family: str):
    """A tiny random model of another family on the test tokenizer's vocabulary."""
    from transformers import AutoConfig, AutoModelForCausalLM

    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=256)  # fmt: skip
    extra = {
        "llama": {},
        "qwen2": {},
        # one sliding-window layer (its own cache kind) and one full-attention layer
        "gemma3_text": dict(
            head_dim=8, sliding_window=4, layer_types=["sliding_attention", "full_attention"]
        ),
    }[family]
    torch.manual_seed(0)
    config = AutoConfig.for_model(family, **common, **extra)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2", "gemma3_text"])
def test_preallocated_cache_gives_the_same_tokens_as_concatenation(tiny, prompts, stops, family):
    """The in-place KV cache (full-attention layers) against transformers' concatenating one:
    identical tokens with rows leaving at their own EOS and with a copied prompt cache, and the
    buffer is written in place, never reallocated while the batch keeps its rows."""
    from transformers.cache_utils import DynamicSlidingWindowLayer

    from deltalab.evaluation import generation

    model, tokenizer = tiny
    if family != "gpt2":
        model = _family_model(tokenizer, family)
    _, pad, encoded, order = generation._prepare(tokenizer, prompts, model, MAX_NEW, stops)
    ids, mask = generation._left_pad([encoded[i] for i in order], pad, model.device)
    with torch.inference_mode():
        # stop ids that end rows at different steps, from this model's own unstopped output
        free = generation._decode_batch(model, ids, mask, MAX_NEW, [-1], preallocate=False)
        eos = [free[0][4]]  # ends row 0 (and any row sharing it) early, not every row
        for repeat in (1, 2):
            runs = [
                generation._decode_batch(
                    model, ids, mask, MAX_NEW, eos, repeat=repeat, preallocate=pre
                )
                for pre in (False, True)
            ]
            assert runs[0] == runs[1]
        assert len({len(r) for r in runs[1]}) >= 2  # rows left the batch at different steps

        cache = generation._new_cache(model, ids.shape[1] + MAX_NEW)
        kinds = [type(layer) for layer in cache.layers]
        if family == "gemma3_text":
            assert kinds == [DynamicSlidingWindowLayer, generation.PreallocatedLayer]
        else:
            assert set(kinds) == {generation.PreallocatedLayer}
        arg = "cache" if generation._forward_accepts(model, "cache") else "past_key_values"
        model(input_ids=ids, attention_mask=mask, use_cache=True, **{arg: cache})
        full = cache.layers[-1]
        storage = full._keys.untyped_storage().data_ptr()
        step_mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], 1)
        model(input_ids=ids[:, -1:], attention_mask=step_mask, use_cache=True, **{arg: cache})
        assert full.get_seq_length() == ids.shape[1] + 1
        assert full.keys.untyped_storage().data_ptr() == storage  # a view of the same buffer
