"""Throughput of batched evaluation vs one-question-at-a-time `generate` (target: >= 5x on CPU).

Both runs use the same model, questions, prompt format and max_new_tokens, greedy decoding; the
bench also checks that the two produce identical tokens. Tokens/s counts response tokens only (up
to and including EOS), so padding and rows that keep running after their EOS are not credited.

    nice -n 10 python bench/eval_throughput.py                    # random 6x256 GPT-2, 64 questions
    nice -n 10 python bench/eval_throughput.py --model models/baseline/seed0/sft_gsm8k

A random model never emits EOS, so every response runs to max_new_tokens. A trained model stops
at different lengths; rows that stopped leave the batch (and its KV cache), and what remains is the
cost of padding and of batches that shrink to a few long answers. Pass --model to measure that.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import time

import torch

from deltalab.evaluation.generation import generate_greedy, generate_one_at_a_time
from deltalab.evaluation.prompts import format_prompt


def build_tiny(layers: int, width: int, seed: int):
    """A byte-level BPE tokenizer trained on synthetic text and a random GPT-2 (offline)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from deltalab.tokens import MUL_TOKENS

    rng = random.Random(seed)
    texts = [synthetic_question(rng) + f" {rng.randint(1, 999)} #### 7" for _ in range(2000)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    tokenizer.add_tokens([AddedToken(t, special=False) for t in MUL_TOKENS])
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=layers,
        n_embd=width,
        n_head=max(1, width // 64),
        n_positions=512,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config).eval(), tokenizer


NAMES = ["Natalia", "Tom", "Weng", "Betty", "Julie", "James", "Albert", "Ken"]
DAYS = ["Monday", "Friday", "Sunday"]
ITEMS = ["clips", "apples", "eggs", "pages", "letters", "cupcakes", "marbles", "stamps"]


def synthetic_question(rng: random.Random) -> str:
    """GSM8K-like word problems of one to four sentences (varied lengths, like the real set)."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    parts = [f"{name} has {rng.randint(2, 90)} {item}."]
    for _ in range(rng.randint(0, 3)):
        parts.append(
            rng.choice(
                [
                    f"Each day {name} buys {rng.randint(2, 9)} bags of {rng.randint(2, 9)} {item}.",
                    f"{name} gives half of them to a friend on {rng.choice(DAYS)}.",
                    f"A box of {item} costs ${rng.randint(2, 40)} at the market.",
                ]
            )
        )
    parts.append(f"How many {item} does {name} have after {rng.randint(2, 7)} days?")
    return " ".join(parts)


def load_model(path: str):
    from deltalab.models import load_causal_lm

    return load_causal_lm(path, device="cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF checkpoint directory (default: a random GPT-2)")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.nice(10)  # others train on the same cores

    if args.model:
        model, tokenizer = load_model(args.model)
        label = args.model
    else:
        model, tokenizer = build_tiny(args.layers, args.width, args.seed)
        label = f"random GPT-2 {args.layers}x{args.width}"
    n_params = sum(p.numel() for p in model.parameters())
    rng = random.Random(args.seed + 1)
    prompts = [format_prompt(tokenizer, synthetic_question(rng)) for _ in range(args.questions)]
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    print(
        f"model: {label} ({n_params / 1e6:.1f}M params), {len(prompts)} questions, "
        f"prompt tokens {min(lengths)}-{max(lengths)}, max_new_tokens {args.max_new_tokens}, "
        f"batch size {args.batch_size}, torch threads {torch.get_num_threads()}"
    )
    # Warm-up so neither side pays one-time allocation and dispatch costs.
    generate_one_at_a_time(model, tokenizer, prompts[:1], max_new_tokens=4)

    # Interleave the two methods chunk by chunk so load from other processes on the machine hits
    # both alike; CPU time (this process, all threads) is reported beside wall time because it is
    # much less sensitive to that load.
    batched, single = [], []
    wall = {"batched": 0.0, "single": 0.0}
    cpu = {"batched": 0.0, "single": 0.0}
    for start in range(0, len(prompts), args.batch_size):
        chunk = prompts[start : start + args.batch_size]
        for name in ("batched", "single"):
            w0, c0 = time.perf_counter(), time.process_time()
            if name == "batched":
                batched += generate_greedy(
                    model,
                    tokenizer,
                    chunk,
                    max_new_tokens=args.max_new_tokens,
                    batch_size=args.batch_size,
                )
            else:
                single += generate_one_at_a_time(
                    model, tokenizer, chunk, max_new_tokens=args.max_new_tokens
                )
            wall[name] += time.perf_counter() - w0
            cpu[name] += time.process_time() - c0

    tokens = sum(g.num_tokens for g in batched)
    tokens_single = sum(g.num_tokens for g in single)
    identical = sum(a == b for a, b in zip(batched, single, strict=True))
    stopped = sum(g.stopped for g in batched)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for name, n in (("batched", tokens), ("one at a time", tokens_single)):
        key = "batched" if name == "batched" else "single"
        print(
            f"{name:<13}: {n} tokens, wall {wall[key]:.2f} s = {n / wall[key]:.1f} tokens/s, "
            f"cpu {cpu[key]:.2f} s = {n / cpu[key]:.1f} tokens/cpu-s"
        )
    ratio_wall = (tokens / wall["batched"]) / (tokens_single / wall["single"])
    ratio_cpu = (tokens / cpu["batched"]) / (tokens_single / cpu["single"])
    print(f"ratio        : {ratio_wall:.1f}x wall-clock, {ratio_cpu:.1f}x cpu-time (target >= 5x)")
    print(f"identical    : {identical}/{len(prompts)} responses, {stopped} stopped at EOS")
    print(f"peak RSS     : {peak_rss_mb:.0f} MB")
    return 0 if identical == len(prompts) else 1


if __name__ == "__main__":
    sys.exit(main())
