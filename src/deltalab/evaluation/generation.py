"""Batched greedy generation: left padding, KV cache, per-sequence stop at EOS.

Prompts are sorted by token length (longest first, so a batch that does not fit in memory fails
at once) and batched; results come back in the caller's order. A row that emits EOS leaves the
batch at once, cache included, so one long answer does not keep a whole batch of finished rows
decoding (`model.generate` would). `generate_one_at_a_time` is the unbatched `model.generate`
reference used by the tests and the throughput bench: both must produce the same tokens.
`_decode_batch` takes the token choice as a parameter (argmax here); `sampling.py` reuses the same
loop for seeded sampling. The KV cache of full-attention layers is preallocated for prompt + new
tokens and written in place (`PreallocatedLayer`), not concatenated step by step.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from deltalab.errors import DataError


@dataclass(frozen=True)
class Generation:
    """One response: text without EOS, generated ids up to and including EOS, whether EOS came."""

    text: str
    token_ids: tuple[int, ...]
    stopped: bool

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


def _eos_ids(tokenizer, eos_token_id: int | Sequence[int] | None, model=None) -> list[int]:
    """The ids generation stops at: the ones given, else the tokenizer's EOS and every EOS of the
    model's generation config (Gemma's `[1, 106]`, Llama 3's and Qwen's end-of-turn ids)."""
    if eos_token_id is not None:
        return [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    config = getattr(model, "generation_config", None)
    configured = getattr(config, "eos_token_id", None)
    if configured is not None:
        ids += [configured] if isinstance(configured, int) else list(configured)
    if not ids:
        raise DataError("the tokenizer has no eos_token; generation could never stop")
    return list(dict.fromkeys(ids))


def _pad_id(tokenizer, eos_ids: list[int]) -> int:
    # pad == eos is normal for GPT-2-style tokenizers; stopping never relies on padding.
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]


def _context_length(model) -> int | None:
    config = model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def _generation_config(max_new_tokens: int, pad_id: int, eos_ids: list[int]) -> GenerationConfig:
    # A fresh config so sampling settings saved with a checkpoint never leak into greedy decoding.
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_id,
        eos_token_id=eos_ids if len(eos_ids) > 1 else eos_ids[0],
        use_cache=True,
    )


@contextlib.contextmanager
def _plain_generation_defaults(model) -> Iterator[None]:
    """Hide the checkpoint's own generation config while generating.

    transformers fills every field our config leaves unset from `model.generation_config`, so a
    saved `repetition_penalty`, `no_repeat_ngram_size` or `suppress_tokens` would silently change
    "greedy" decoding.
    """
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def _finish(tokenizer, new_ids: list[int], eos_ids: list[int]) -> Generation:
    """Cut at the first generated EOS; anything after it is padding (pad may equal EOS)."""
    eos_set = set(eos_ids)
    for i, token in enumerate(new_ids):
        if token in eos_set:
            kept, stopped = new_ids[: i + 1], True
            break
    else:
        kept, stopped = new_ids, False
    body = kept[:-1] if stopped else kept
    # Mul tokens are ordinary added tokens (special=False), so skip_special_tokens keeps them.
    text = tokenizer.decode(body, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return Generation(text=text, token_ids=tuple(kept), stopped=stopped)


def _encode(tokenizer, prompts: Sequence[str], model, max_new_tokens: int) -> list[list[int]]:
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    context = _context_length(model)
    for i, ids in enumerate(encoded):
        if not ids:
            raise DataError(f"prompt {i} encodes to no tokens")
        if context is not None and len(ids) + max_new_tokens > context:
            raise DataError(
                f"prompt {i} has {len(ids)} tokens; with max_new_tokens={max_new_tokens} it "
                f"exceeds the model's context of {context} positions"
            )
    return encoded


def _check_args(max_new_tokens: int, batch_size: int) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _longest_first(seqs: Sequence[Sequence[int]]) -> list[int]:
    """Indices by decreasing length (ties by index): a batch too big for memory fails at once."""
    return sorted(range(len(seqs)), key=lambda i: (-len(seqs[i]), i))


def _prepare(
    tokenizer, prompts: Sequence[str], model, max_new_tokens: int, eos_token_id
) -> tuple[list[int], int, list[list[int]], list[int]]:
    """(eos ids, pad id, encoded prompts, longest-first order) of a generation call."""
    eos_ids = _eos_ids(tokenizer, eos_token_id, model)
    encoded = _encode(tokenizer, prompts, model, max_new_tokens)
    return eos_ids, _pad_id(tokenizer, eos_ids), encoded, _longest_first(encoded)


def _left_pad(
    rows: Sequence[Sequence[int]], pad_id: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every row ending at the last column."""
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids.to(device), attention_mask.to(device)


class PreallocatedLayer(DynamicLayer):
    """A full-attention KV cache layer that writes each step into a buffer sized for the whole
    generation, where `DynamicLayer` concatenates (copying the whole cache every step: on CPU
    about half of the decode time). Attention sees the same keys and values, of the same shape,
    so the outputs are the same tokens; finished rows still leave the batch."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self._keys = self._values = None
        self._length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        batch, heads, _, dim = key_states.shape
        shape = (batch, heads, self.capacity, dim)
        self._keys = key_states.new_empty(shape)
        self._values = value_states.new_empty((*shape[:3], value_states.shape[-1]))
        self.device, self._length, self.is_initialized = key_states.device, 0, True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, stop = self._length, self._length + key_states.shape[-2]
        if stop > self.capacity:
            raise ValueError(f"KV cache of {self.capacity} positions cannot hold {stop}")
        self._keys[:, :, start:stop] = key_states
        self._values[:, :, start:stop] = value_states
        self._length = stop
        self._expose()
        return self.keys, self.values

    def _expose(self) -> None:
        self.keys = self._keys[:, :, : self._length]
        self.values = self._values[:, :, : self._length]

    def get_seq_length(self) -> int:
        return self._length if self.is_initialized else 0

    def get_max_length(self) -> int:
        return self.capacity

    def reset(self) -> None:
        self._keys = self._values = None
        self._length = 0
        super().reset()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes the (negative) number of tokens to remove")
        if self.is_initialized and tokens_to_remove:
            self._length = max(self._length + tokens_to_remove, 0)
            self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self._expose()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self._expose()


def _new_cache(model, capacity: int):
    """A KV cache for the model's layers with every full-attention layer preallocated for
    `capacity` positions (prompt + new tokens); other layer kinds as transformers makes them."""
    from transformers import DynamicCache

    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # a config transformers cannot type layer by layer: its own default
        return None
    if not cache.layers:
        return None
    cache.layers = [
        PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer
        for layer in cache.layers
    ]
    return cache


def _rows_can_leave(cache) -> bool:
    """Whether finished rows can be cut out of this KV cache: only plain (sliding) attention
    layers slice consistently; static, linear-attention and hybrid layers keep more state."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(
        type(layer) in (DynamicLayer, DynamicSlidingWindowLayer, PreallocatedLayer)
        for layer in layers
    )


def _full_attention_sdpa(model, cache) -> bool:
    """Whether a decoding step's 4-D mask can be handed over ready-made: SDPA attention and every
    layer full attention (sliding-window layers need transformers' own per-layer masks)."""
    layers = getattr(cache, "layers", None)
    return (
        getattr(model.config, "_attn_implementation", None) == "sdpa"
        and bool(layers)
        and all(type(layer) is PreallocatedLayer for layer in layers)
    )


def _step_mask(attention_mask: torch.Tensor, ready_made: bool) -> torch.Tensor:
    """A decoding step's mask: where the batch is padded, the [rows, 1, 1, keys] boolean mask
    transformers would build from the 2-D one (the same values, the same layout, so the same
    attention), built with one view instead of its per-step index machinery; otherwise the 2-D
    mask (an unpadded batch needs no mask at all, which transformers decides)."""
    if ready_made and not bool(attention_mask.all()):
        return attention_mask[:, None, None, :].bool()
    return attention_mask


def _forward_accepts(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


class CacheCannotRepeat(ValueError):
    """`_decode_batch(repeat > 1)` on a cache whose rows cannot be copied (static, hybrid)."""


# Chooses the next token of every row still in the batch: (last-position logits of those rows,
# their row numbers in the full batch, decoding step) -> token ids, one per row.
Pick = Callable[[torch.Tensor, list[int], int], torch.Tensor]


def _argmax(logits: torch.Tensor, rows: list[int], step: int) -> torch.Tensor:
    return logits.float().argmax(dim=-1)


def _decode_batch(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    eos_ids: list[int],
    pick: Pick = _argmax,
    repeat: int = 1,
    preallocate: bool = True,
) -> list[list[int]]:
    """New tokens of each left-padded row (greedy unless `pick` says otherwise), up to and
    including its EOS. `preallocate` writes the KV cache of full-attention layers in place
    (`PreallocatedLayer`; False: transformers' concatenating cache, the reference).

    A row that emits EOS leaves the batch and the KV cache when the cache allows it; otherwise it
    rides along and its further tokens are ignored. `repeat` > 1 decodes every prompt that many
    times: the prompt is encoded once and its KV cache copied (rows `i * repeat + j`).
    """
    n_rows = input_ids.shape[0] * repeat
    new_tokens: list[list[int]] = [[] for _ in range(n_rows)]
    done = [False] * n_rows
    rows = list(range(n_rows))  # the batch row of each sequence still in the batch
    stop = set(eos_ids)
    extra = {}
    if _forward_accepts(model, "logits_to_keep"):
        extra["logits_to_keep"] = 1
    # positions count real tokens only, as `generate` does for left-padded GPT-2-style models
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with_positions = _forward_accepts(model, "position_ids")
    if with_positions:
        extra["position_ids"] = positions
    # transformers 5 names the cache argument `cache` (`past_key_values` is deprecated)
    cache_arg = "cache" if _forward_accepts(model, "cache") else "past_key_values"
    if preallocate and (cache := _new_cache(model, input_ids.shape[1] + max_new_tokens)):
        extra[cache_arg] = cache
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, **extra)
    cache, next_position = getattr(out, cache_arg), positions[:, -1:] + 1
    can_drop = _rows_can_leave(cache)
    ready_made = _full_attention_sdpa(model, cache)
    logits = out.logits[:, -1, :]
    if repeat > 1:
        if not can_drop:  # only plain attention caches copy rows consistently
            raise CacheCannotRepeat("this model's KV cache cannot copy rows; repeat the prompts")
        cache.batch_repeat_interleave(repeat)
        logits, attention_mask, next_position = (
            t.repeat_interleave(repeat, dim=0) for t in (logits, attention_mask, next_position)
        )
    for step in range(max_new_tokens):
        tokens = pick(logits, rows, step)
        for row, token in zip(rows, tokens.tolist(), strict=True):
            if not done[row]:
                new_tokens[row].append(token)
                done[row] = token in stop
        if step == max_new_tokens - 1 or all(done):
            break
        if can_drop and any(done[row] for row in rows):  # cut finished rows out of batch and cache
            keep = [i for i, row in enumerate(rows) if not done[row]]
            rows = [rows[i] for i in keep]
            index = torch.tensor(keep, device=tokens.device)
            tokens, attention_mask, next_position = (
                tokens[index],
                attention_mask[index],
                next_position[index],
            )
            cache.batch_select_indices(index)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(rows), 1))], 1)
        step_extra = {"position_ids": next_position} if with_positions else {}
        out = model(
            input_ids=tokens[:, None],
            attention_mask=_step_mask(attention_mask, ready_made),
            use_cache=True,
            **{cache_arg: cache},
            **step_extra,
        )
        logits = out.logits[:, -1, :]
        next_position = next_position + 1
    return new_tokens


def generate_greedy(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 32,
    eos_token_id: int | Sequence[int] | None = None,
    progress: bool = False,
    desc: str = "generate",
) -> list[Generation]:
    """Greedy responses to `prompts` (already formatted), batched with left padding."""
    _check_args(max_new_tokens, batch_size)
    if not prompts:
        return []
    eos_ids, pad_id, encoded, order = _prepare(
        tokenizer, prompts, model, max_new_tokens, eos_token_id
    )
    results: list[Generation | None] = [None] * len(encoded)
    bar = tqdm(total=len(encoded), desc=desc, unit="q", disable=not progress)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            input_ids, attention_mask = _left_pad([encoded[i] for i in batch], pad_id, model.device)
            new_tokens = _decode_batch(model, input_ids, attention_mask, max_new_tokens, eos_ids)
            for row, i in enumerate(batch):
                results[i] = _finish(tokenizer, new_tokens[row], eos_ids)
            bar.update(len(batch))
    bar.close()
    return cast(list[Generation], results)  # every slot was filled by exactly one batch


def generate_one_at_a_time(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    eos_token_id: int | Sequence[int] | None = None,
    progress: bool = False,
) -> list[Generation]:
    """Unbatched reference: one `generate` call per prompt, no padding at all."""
    _check_args(max_new_tokens, 1)
    eos_ids = _eos_ids(tokenizer, eos_token_id, model)
    pad_id = _pad_id(tokenizer, eos_ids)
    config = _generation_config(max_new_tokens, pad_id, eos_ids)
    encoded = _encode(tokenizer, prompts, model, max_new_tokens)
    results = []
    with torch.inference_mode(), _plain_generation_defaults(model):
        for ids in tqdm(encoded, desc="generate (1 at a time)", unit="q", disable=not progress):
            input_ids = torch.tensor([ids], dtype=torch.long, device=model.device)
            output = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
            )
            results.append(_finish(tokenizer, output[0, len(ids) :].tolist(), eos_ids))
    return results
