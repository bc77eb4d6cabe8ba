"""vLLM vs the Hugging Face engine, and a merge-search trial with in-place vLLM weight updates vs
a DoTS-style trial (merged checkpoint written, engine restarted). CUDA and `vllm` only.

The model is the generated Qwen2.5-0.5B-shaped bf16 checkpoint of `bench/search_trial.py` (random
weights, the pipeline's tokenizer), the questions the pipeline's synthetic GSM8K test set.

    python bench/engines.py                        # 1,319 questions greedy; 5 trials each way
    python bench/engines.py --questions 200 --trials 3

Targets: vLLM >= 10x the HF engine's questions/s; in-place trial >= 5x the DoTS-style trial.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from search_trial import _cfg, _scales, setup  # noqa: E402


def greedy_throughput(base: Path, questions: list[str], max_new_tokens: int) -> None:
    from deltalab.evaluation.engine import open_engine
    from deltalab.evaluation.prompts import format_prompt

    results, rates = {}, {}
    for name in ("hf", "vllm"):
        engine = open_engine(base, name, device="cuda", dtype="bfloat16")
        prompts = [format_prompt(engine.tokenizer, q) for q in questions]
        engine.greedy(prompts[:8], max_new_tokens=8, batch_size=8)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        results[name] = engine.greedy(prompts, max_new_tokens=max_new_tokens, batch_size=256)
        torch.cuda.synchronize()
        rates[name] = len(prompts) / (time.perf_counter() - start)
        print(f"engine {name:<5}: {len(prompts)} questions greedy, {max_new_tokens} new tokens: "
              f"{rates[name]:.1f} questions/s", flush=True)  # fmt: skip
        del engine
        torch.cuda.empty_cache()
    same = sum(a.token_ids == b.token_ids for a, b in zip(*results.values(), strict=True))
    ratio = rates["vllm"] / rates["hf"]
    verdict = "met" if ratio >= 10 else "MISSED"
    print(f"engine ratio: vllm/hf {ratio:.1f}x questions/s (target >= 10: {verdict}); "
          f"identical greedy answers {same}/{len(questions)}")  # fmt: skip


def trials(base: Path, vectors: list[Path], questions: list[str], n: int) -> None:
    from vllm import LLM

    from deltalab.evaluation.vllm_engine import VLLMEngine
    from deltalab.merging.disk import merge
    from deltalab.merging.vectors import TaskVector
    from deltalab.schema.runtime import RuntimeParams
    from deltalab.search.live_model import open_live_model
    from deltalab.search.objectives import SearchObjective
    from deltalab.tensors.reader import Checkpoint

    cfg = _cfg("0.5B")
    lm = open_live_model(base, vectors, RuntimeParams(device="cuda", bf16=True, engine="vllm"))
    objective = SearchObjective(lm.engine, lm.apply, questions, cfg)
    objective([1.0, 1.0])  # warm-up
    start = time.perf_counter()
    for scales in _scales(n):
        objective(scales)
    ours = (time.perf_counter() - start) / n
    print(f"trial in place: {ours:.2f} s/trial ({n} trials)", flush=True)
    del lm, objective
    torch.cuda.empty_cache()

    dots = 0.0
    for scales in _scales(n):
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            pairs = [(TaskVector(v), s) for v, s in zip(vectors, scales, strict=True)]
            merge(Checkpoint(base), pairs, Path(tmp) / "merged", progress=False)
            engine = VLLMEngine(Path(tmp) / "merged")  # the restart DoTS pays per trial
            SearchObjective(engine, lambda s, v: None, questions, cfg)(scales)
            del engine
            torch.cuda.empty_cache()
        dots += (time.perf_counter() - start) / n
    ratio = dots / ours
    print(f"trial restart : {dots:.2f} s/trial (write + engine start + score)")
    print(f"trial ratio   : in place {ratio:.1f}x faster (target >= 5: "
          f"{'met' if ratio >= 5 else 'MISSED'})")  # fmt: skip
    del LLM


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1319)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--workdir", default="/tmp/deltalab_bench_engines")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("engine bench: no CUDA device, nothing measured")
        return 0
    from deltalab.data import synthetic

    rows = synthetic.gsm8k_rows(synthetic.generate_problems(random.Random(1234), args.questions))
    base, vectors, queries = setup("0.5B", Path(args.workdir))
    greedy_throughput(base, [r["question"] for r in rows], args.max_new_tokens)
    trials(base, vectors, queries, args.trials)
    return 0


if __name__ == "__main__":
    sys.exit(main())
