"""The vLLM engine (optional, CUDA only): the same prompts, stopping and decoding as the HF engine,
with vLLM's paged attention and continuous batching.

Prompts are encoded by the checkpoint's tokenizer exactly as the HF engine encodes them and sent
as token ids, so both engines see the same tokens. Each sample is its own request seeded by
`sample_seed(seed, question, sample)`. `load_weights` replaces weights in the running engine
(Hugging Face names, as the checkpoint stores them) and drops the prefix cache, so a merge-search
trial costs a weight copy, not a checkpoint write and an engine start.

Confidence comes from vLLM's prompt log-probabilities of prompt + response: the mean
log-probability is exact; the entropy is computed over the 20 most likely tokens of each position
(a lower bound of the full entropy, which would need every logit).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace

import torch

from deltalab.errors import ConfigError
from deltalab.evaluation.engine import Engine
from deltalab.evaluation.generation import Generation, _encode, _eos_ids, _finish

TOP_LOGPROBS = 20


def sample_seed(seed: int, question: int, sample: int) -> int:
    """The seed of sample `sample` of question `question` (stable across runs and machines)."""
    digest = hashlib.sha256(f"deltalab:{seed}:{question}:{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # a non-negative int64


def require_vllm() -> None:
    if not torch.cuda.is_available():
        raise ConfigError("runtime.engine: vllm runs on CUDA only; this machine has no CUDA device")
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "runtime.engine: vllm is not installed (python -m pip install -e '.[vllm]')"
        ) from exc


class VLLMEngine(Engine):
    def __init__(
        self,
        checkpoint: str | os.PathLike,
        *,
        dtype: str = "bfloat16",
        trust_remote_code: bool = False,
        seed: int = 0,
        gpu_memory_utilization: float = 0.85,
    ) -> None:
        require_vllm()
        from transformers import AutoTokenizer, GenerationConfig
        from vllm import LLM

        path = str(Path(checkpoint))
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        try:
            generation_config = GenerationConfig.from_pretrained(path)
        except OSError:  # no generation_config.json: the tokenizer's EOS alone
            generation_config = None
        self._model_view = SimpleNamespace(
            generation_config=generation_config,
            config=SimpleNamespace(**_context_fields(path)),
        )
        self.eos_ids = _eos_ids(self.tokenizer, None, self._model_view)
        self.sizing = self._model_view
        self.llm = LLM(
            model=path,
            tokenizer=path,
            dtype=dtype,
            seed=seed,
            trust_remote_code=trust_remote_code,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=True,
        )

    # ------------------------------------------------------------------ requests

    def _prompts(self, prompts: Sequence[str], max_new_tokens: int):
        from vllm.inputs import TokensPrompt

        encoded = _encode(self.tokenizer, prompts, self._model_view, max_new_tokens)
        return [TokensPrompt(prompt_token_ids=ids) for ids in encoded]

    def _params(self, max_new_tokens: int, **kw):
        from vllm import SamplingParams

        return SamplingParams(
            max_tokens=max_new_tokens,
            stop_token_ids=self.eos_ids,
            skip_special_tokens=True,
            detokenize=False,  # text comes from `_finish`, as with the HF engine
            **kw,
        )

    def _generation(self, completion) -> Generation:
        ids = list(completion.token_ids)
        if completion.finish_reason == "stop" and (not ids or ids[-1] not in self.eos_ids):
            stop = completion.stop_reason
            ids.append(stop if isinstance(stop, int) else self.eos_ids[0])
        return _finish(self.tokenizer, ids, self.eos_ids)

    def greedy(self, prompts, *, max_new_tokens, batch_size, progress=False, desc="generate"):
        outputs = self.llm.generate(
            self._prompts(prompts, max_new_tokens),
            self._params(max_new_tokens, temperature=0.0),
            use_tqdm=progress,
        )
        return [self._generation(o.outputs[0]) for o in outputs]

    def sample(
        self, prompts, *, n, max_new_tokens, temperature, top_p, seed, batch_size,
        progress=False, desc="sample",
    ):  # fmt: skip
        tokens = self._prompts(prompts, max_new_tokens)
        requests = [tokens[i] for i in range(len(tokens)) for _ in range(n)]
        sampled = {"temperature": temperature, "top_p": top_p}
        params = [
            self._params(max_new_tokens, **sampled, seed=sample_seed(seed, i, j))
            for i in range(len(tokens))
            for j in range(n)
        ]
        outputs = self.llm.generate(requests, params, use_tqdm=progress)
        flat = [self._generation(o.outputs[0]) for o in outputs]
        return [flat[i * n : (i + 1) * n] for i in range(len(tokens))]

    def confidence(self, prompts, responses, *, batch_size):
        from vllm.inputs import TokensPrompt

        from deltalab.evaluation.sampling import Confidence

        encoded = _encode(self.tokenizer, prompts, self._model_view, 1)
        requests = [
            TokensPrompt(prompt_token_ids=[*ids, *response])
            for ids, response in zip(encoded, responses, strict=True)
        ]
        params = self._params(1, temperature=0.0, prompt_logprobs=TOP_LOGPROBS)
        results = []
        for ids, response, out in zip(
            encoded, responses, self.llm.generate(requests, params, use_tqdm=False), strict=True
        ):
            logprobs, entropies = [], []
            for k, token in enumerate(response):
                position = out.prompt_logprobs[len(ids) + k]  # {token id: Logprob}
                logprobs.append(position[token].logprob)
                p = torch.tensor([lp.logprob for lp in position.values()]).exp()
                entropies.append(float(-(p * p.log()).sum()))
            count = max(len(response), 1)
            results.append(Confidence(sum(logprobs) / count, sum(entropies) / count, len(response)))
        return results

    def prompt_perplexity(self, questions, *, batch_size):
        from vllm.inputs import TokensPrompt

        from deltalab.evaluation.perplexity import mean_perplexity
        from deltalab.evaluation.prompts import format_prompt

        prompts = [format_prompt(self.tokenizer, q) for q in questions]
        encoded = _encode(self.tokenizer, prompts, self._model_view, 1)
        requests = [TokensPrompt(prompt_token_ids=ids) for ids in encoded]
        params = self._params(1, temperature=0.0, prompt_logprobs=0)  # the actual tokens only
        nll = []
        for ids, out in zip(encoded, self.llm.generate(requests, params, use_tqdm=False),
                            strict=True):  # fmt: skip
            token_logprobs = [out.prompt_logprobs[k][ids[k]].logprob for k in range(1, len(ids))]
            nll.append(-sum(token_logprobs) / len(token_logprobs))
        return mean_perplexity(nll)

    # ------------------------------------------------------------------ weights

    def _model(self):
        """The engine's torch model (the vLLM releases TRL supports, V1 first)."""
        executor = self.llm.llm_engine.model_executor
        worker = executor.driver_worker
        return getattr(worker, "worker", worker).model_runner.model

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        self._model().load_weights(weights)
        self.llm.reset_prefix_cache()  # cached prompt KV came from the old weights


def _context_fields(path: str) -> dict:
    import json

    config = json.loads((Path(path) / "config.json").read_text())
    keys = ("max_position_embeddings", "n_positions")
    return {k: config[k] for k in keys if isinstance(config.get(k), int)}
