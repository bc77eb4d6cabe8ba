"""Tiny offline tokenizer + GPT-2 for the evaluation tests (nothing is downloaded)."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from deltalab.tokens import MUL_TOKENS

EOS = "<|endoftext|>"


def training_texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        a, b, c = rng.randint(1, 9), rng.randint(1, 9), rng.randint(10, 99)
        texts.append(
            f"User: Tom has {c} apples and buys {a} bags of {b}. How many apples now?\n"
            f"Assistant: {a}*{b}={a * b}. {c}+{a * b}={c + a * b}. The answer is {c + a * b}.\n"
            f"#### {c + a * b}"
        )
    return texts


def build_tokenizer(pad_equals_eos: bool = True, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """Byte-level BPE on a few hundred strings; mul tokens added as ordinary tokens."""
    specials = [EOS] if pad_equals_eos else [EOS, "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_texts(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS if pad_equals_eos else "<pad>"
    )
    fast.add_tokens([AddedToken(t, special=False, normalized=False) for t in MUL_TOKENS])
    return fast


def build_model(tokenizer, seed: int = 0, n_positions: int = 256, init: float = 0.3):
    """A 2-layer GPT-2; a wide init makes greedy outputs varied rather than one repeated token."""
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=2,
        n_positions=n_positions,
        vocab_size=len(tokenizer),
        initializer_range=init,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config).eval()


def save_checkpoint(directory: Path, seed: int = 0) -> Path:
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def questions(n: int, seed: int = 1) -> list[str]:
    """Questions of varied lengths (so batches need real left padding)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = " ".join(rng.choice(["apples", "bags", "Tom", "buys", "has"]) for _ in range(i % 7))
        out.append(f"What is {rng.randint(1, 9)} times {rng.randint(1, 9)}? {words}".strip())
    return out


def tiny_lm(seed: int = 0):
    """(model, tokenizer): the random 2-layer GPT-2 on the offline tokenizer."""
    tokenizer = build_tokenizer()
    return build_model(tokenizer, seed=seed), tokenizer


def eval_prompts(n: int) -> list[str]:
    """`n` formatted evaluation prompts of varied lengths."""
    from deltalab.evaluation.prompts import plain_prompt

    return [plain_prompt(q) for q in questions(n)]
