"""Throughput of batched, per-row seeded sampling vs `generate(do_sample=True)` per sample.

The model is a random GPT-2 of the tiny profile (4 layers x 128, the study's byte-level BPE of 1024
tokens + 45 mul tokens) and the questions are synthetic GSM8K test problems, so prompt lengths
match the `behavior` stage of the tiny profile. A random model's next-token distribution is nearly
uniform, so a sample emits EOS about once per vocabulary-size steps: nearly every sample runs to
max_new_tokens, the worst case.

    nice -n 10 python bench/sampling.py --threads 1     # 32 questions x 8 samples, 64 new tokens
    nice -n 10 python bench/sampling.py --stage         # also: the whole behavior stage, 4 models

Reported: tokens/s of the batched sampler with the prompt's KV cache copied n times
(`expand_cache=True`, the default) and with the prompt repeated n times in the batch, of the
one-at-a-time reference, their ratios, whether two batch sizes give identical samples, and the
peak RSS. `--stage` builds four random checkpoints and the tiny test set in a temporary directory
and times `stages/behavior.py` end to end with the tiny profile's `behavior` params.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from deltalab.data import synthetic
from deltalab.evaluation.prompts import format_prompt
from deltalab.evaluation.sampling import generate_samples
from deltalab.models import build_gpt2
from deltalab.schema.model import ModelParams
from deltalab.tokenizer import add_study_tokens, train_bpe

TINY_MODEL = ModelParams(n_layer=4, n_head=4, n_embd=128, n_positions=256)


def tiny_tokenizer(seed: int = 0):
    """The study's tokenizer trained on synthetic GSM8K-style text (tiny-profile vocabulary)."""
    rng = random.Random(seed)
    problems = synthetic.generate_problems(rng, 500)
    texts = [r["text"] for r in synthetic.corpus_rows(rng, 3000, problems)]
    texts += [m["content"] for r in synthetic.tulu_rows(rng, 1000, "t") for m in r["messages"]]
    return add_study_tokens(train_bpe(texts, 1024), 64)


def test_questions(n: int, seed: int = 1234) -> list[dict]:
    return synthetic.gsm8k_rows(synthetic.generate_problems(random.Random(seed), n))


def one_at_a_time(model, tokenizer, prompts, n, max_new_tokens, temperature) -> list[int]:
    """Response token counts of `n` `generate(do_sample=True)` calls per prompt, batch size 1."""
    from transformers import GenerationConfig

    eos = tokenizer.eos_token_id
    config = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos,
    )
    counts = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
            for _ in range(n):
                out = model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config
                )
                new = out[0, ids.shape[1] :].tolist()
                counts.append(new.index(eos) + 1 if eos in new else len(new))
    return counts


def time_stage(args) -> None:
    """Four random tiny checkpoints + the tiny test set in a temp dir; run the behavior stage."""
    import yaml

    from deltalab.config import parse_params
    from deltalab.data.jsonl import write_jsonl
    from deltalab.models import save_checkpoint

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
    import behavior as stage  # stages/behavior.py

    tokenizer = tiny_tokenizer()
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jsonl(root / "data/prepared/gsm8k/test.jsonl", test_questions(200))
        for k, name in enumerate(("sft_tulu", "sft_gsm8k", "rlvr", "dpo")):
            model = build_gpt2(TINY_MODEL, tokenizer, seed=k)
            save_checkpoint(model, tokenizer, root / f"models/baseline/seed0/{name}")
        runtime = raw.get("runtime", {}) | ({"torch_threads": args.threads} if args.threads else {})
        params = parse_params({"runtime": runtime, "behavior": raw.get("behavior", {})})
        b = params.behavior
        cwd = os.getcwd()
        os.chdir(root)
        try:
            w0, c0 = time.perf_counter(), time.process_time()
            stage.main(params, "baseline", 0)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        finally:
            os.chdir(cwd)
    print(
        f"stage        : behavior, {len(b.models)} random tiny models, {b.questions} questions x "
        f"{b.samples} samples, max_new_tokens {b.max_new_tokens}, torch threads "
        f"{params.runtime.torch_threads or 'default'}: wall {wall:.1f} s, cpu {cpu:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128, help="sequences per forward pass")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--stage", action="store_true", help="also time the whole behavior stage")
    args = parser.parse_args(argv)
    os.nice(10)  # others train on the same cores
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = tiny_tokenizer(args.seed)
    model = build_gpt2(TINY_MODEL, tokenizer, seed=args.seed).eval()
    prompts = [format_prompt(tokenizer, r["question"]) for r in test_questions(args.questions)]
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: random GPT-2 4x128 ({n_params / 1e6:.1f}M params, vocab {len(tokenizer)}), "
        f"{len(prompts)} questions x {args.samples} samples, prompt tokens "
        f"{min(lengths)}-{max(lengths)}, max_new_tokens {args.max_new_tokens}, batch size "
        f"{args.batch_size}, torch threads {torch.get_num_threads()}"
    )
    kwargs = dict(
        n=args.samples,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
    generate_samples(model, tokenizer, prompts[:2], **kwargs | {"max_new_tokens": 4})  # warm-up

    # Interleave the methods chunk by chunk so load from other processes hits them alike; CPU
    # time (this process, all threads) is reported beside wall time: it is less load-sensitive.
    methods = {
        "expand cache": {"expand_cache": True, "batch_size": args.batch_size},
        # the engine before the in-place KV cache: transformers' concatenating cache and masks
        "concat cache": {
            "expand_cache": True,
            "batch_size": args.batch_size,
            "preallocate": False,
        },
        "repeat prompt": {"expand_cache": False, "batch_size": args.batch_size},
        "small batches": {"expand_cache": True, "batch_size": args.samples * 3},
    }
    outputs: dict[str, list] = {name: [] for name in methods}
    timings = {name: [0, 0.0, 0.0] for name in [*methods, "one at a time"]}
    chunk = max(1, args.batch_size // args.samples)
    for start in range(0, len(prompts), chunk):
        part = prompts[start : start + chunk]
        for name in timings:
            w0, c0 = time.perf_counter(), time.process_time()
            if name in methods:
                # seed per chunk start so every chunk draws fresh (but reproducible) samples
                out = generate_samples(
                    model, tokenizer, part, **kwargs | {"seed": args.seed + start}, **methods[name]
                )
                outputs[name] += out
                tokens = sum(g.num_tokens for gens in out for g in gens)
            else:
                tokens = sum(
                    one_at_a_time(
                        model, tokenizer, part, args.samples, args.max_new_tokens, args.temperature
                    )
                )
            timings[name][0] += tokens
            timings[name][1] += time.perf_counter() - w0
            timings[name][2] += time.process_time() - c0

    for name, (tokens, wall, cpu) in timings.items():
        print(
            f"{name:<13}: {tokens} tokens, wall {wall:.2f} s = {tokens / wall:.0f} tokens/s, "
            f"cpu {cpu:.2f} s = {tokens / cpu:.0f} tokens/cpu-s"
        )
    ref_tokens, ref_wall, ref_cpu = timings["one at a time"]
    for name in ("expand cache", "repeat prompt"):
        tokens, wall, cpu = timings[name]
        print(
            f"ratio        : {name} {(tokens / wall) / (ref_tokens / ref_wall):.1f}x wall-clock, "
            f"{(tokens / cpu) / (ref_tokens / ref_cpu):.1f}x cpu-time vs one at a time"
        )
    tokens, wall, cpu = timings["expand cache"]
    c_tokens, c_wall, c_cpu = timings["concat cache"]
    print(
        f"ratio        : preallocated KV cache {(tokens / wall) / (c_tokens / c_wall):.2f}x "
        f"wall-clock, {(tokens / cpu) / (c_tokens / c_cpu):.2f}x cpu-time vs the engine with the "
        "concatenating cache (target >= 1.3)"
    )
    same = sum(
        a == b == c == d
        for a, b, c, d in zip(
            outputs["expand cache"],
            outputs["repeat prompt"],
            outputs["small batches"],
            outputs["concat cache"],
            strict=True,
        )
    )
    print(
        f"identical    : {same}/{len(prompts)} questions' samples equal across expand/repeat, "
        f"batch sizes {args.batch_size}/{args.samples * 3} and preallocated/concatenated caches"
    )
    print(f"peak RSS     : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if args.stage:
        time_stage(args)
    return 0 if same == len(prompts) else 1


if __name__ == "__main__":
    sys.exit(main())
