"""Tests for mistakes a mutation audit found the suite let through (issue 12, first part): each
compares with an independent reference (brute force, bytes on disk, a hand-made case)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from deltalab.evaluation.stats import paired_bootstrap_ci
from deltalab.merging.vectors import TaskVector, build_task_vectors
from deltalab.tensors.blocks import matrix_shape, row_chunks
from deltalab.tensors.reader import Checkpoint
from deltalab.tensors.topk import topk_count
from tests.deltas_fixtures import build, finetune, save

CONDITIONS = ("baseline", "mul_tokens")


@pytest.fixture(scope="module")
def vector(tmp_path_factory):
    root = tmp_path_factory.mktemp("holes")
    model = build("gpt2", seed=0)
    base = save(model, root / "base")
    ft = save(finetune(model, seed=1), root / "ft")
    out = root / "v.safetensors"
    build_task_vectors(Checkpoint(base), [(Checkpoint(ft), out)], 0.3, progress=False)
    return base, ft, out


def test_sparse_chunks_read_in_several_pieces_equal_one_piece(vector):
    """Real tensors over 2^20 entries are read in row chunks: the values cursor must advance."""
    _, _, path = vector
    tv = TaskVector(path)
    name = "transformer.wte.weight"
    shape = tv.entries[name]["shape"]
    ranges = row_chunks(*matrix_shape(shape), 8 * shape[1])  # several row chunks
    assert len(ranges) > 2
    pieces = torch.cat(list(tv.chunks(name, ranges)))
    torch.testing.assert_close(pieces.view(shape), tv.dense(name), rtol=0, atol=0)


def test_the_packed_mask_on_disk_is_the_brute_force_top_k_in_little_bit_order(vector):
    base, ft, path = vector
    name = "transformer.h.0.mlp.c_fc.weight"
    with safe_open(f"{base}/model.safetensors", "pt") as b, safe_open(f"{ft}/model.safetensors",
                                                                         "pt") as f:  # fmt: skip
        delta = (f.get_tensor(name).double() - b.get_tensor(name).double()).reshape(-1)
    k = topk_count(delta.numel(), 0.3)
    order = np.lexsort((np.arange(delta.numel()), -delta.abs().numpy()))  # ties: lowest index
    expected = np.zeros(delta.numel(), dtype=bool)
    expected[order[:k]] = True
    with safe_open(str(path), "pt") as v:
        on_disk = v.get_tensor(f"{name}:mask").numpy()
    assert np.array_equal(on_disk, np.packbits(expected, bitorder="little"))


def test_topk_count_rounds_a_fractional_k():
    assert topk_count(10, 0.36) == 4  # round(3.6), not int(3.6)
    assert topk_count(10, 0.01) == 1  # never empty
    assert topk_count(7, 1.0) == 7


def test_the_bootstrap_resamples_the_last_question_too():
    """Only the last pair differs: an index range that stops at k−1 would give an interval of
    exactly 0 on both sides."""
    reference = [0.0] * 5
    treatment = [0.0] * 4 + [1.0]
    low, high = paired_bootstrap_ci(reference, treatment, n_bootstrap=2000, seed=0)
    assert low == 0.0 and high >= 0.2


def test_pooled_seeds_resample_whole_questions_and_report_that_interval():
    """Two seeds that agree question by question: the pooled interval must be the cluster
    bootstrap over questions (wider than treating the 2n pairs as independent)."""
    from deltalab.evaluation.compare import build_compare
    from deltalab.evaluation.params import CompareParams

    rng = np.random.default_rng(0)
    n = 60
    base = rng.random(n) < 0.4
    treat = np.where(rng.random(n) < 0.7, base, rng.random(n) < 0.6)

    def records(correct):
        return [
            {"id": f"q{i}", "task": "gsm8k", "family": "gsm8k", "gold": "1", "correct": bool(c)}
            for i, c in enumerate(correct)
        ]

    conditions = (("baseline", base), ("mul_tokens", treat))
    preds = {(cond, seed, "m"): records(c) for cond, c in conditions for seed in (0, 1)}
    params = CompareParams(n_bootstrap=4000, confidence=0.95, seed=3)
    row = build_compare(preds, params, CONDITIONS)["m"]["gsm8k"]
    ids = [f"q{i}" for i in range(n)] * 2
    ref, trt = np.concatenate([base, base]), np.concatenate([treat, treat])
    clustered = paired_bootstrap_ci(ref, trt, n_bootstrap=4000, seed=3, clusters=ids)
    naive = paired_bootstrap_ci(ref, trt, n_bootstrap=4000, seed=3)
    assert (row["questions_ci_low"], row["questions_ci_high"]) == pytest.approx(clustered)
    assert clustered[1] - clustered[0] > 1.2 * (naive[1] - naive[0])


def test_interval_level_is_the_one_asked_for():
    rng = np.random.default_rng(5)
    ref = rng.random(400) < 0.45
    trt = np.where(rng.random(400) < 0.8, ref, rng.random(400) < 0.6)
    wide = paired_bootstrap_ci(ref, trt, n_bootstrap=20_000, confidence=0.95, seed=1)
    narrow = paired_bootstrap_ci(ref, trt, n_bootstrap=20_000, confidence=0.90, seed=1)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    d = trt.astype(float) - ref.astype(float)
    se = d.std(ddof=1) / np.sqrt(d.size)
    # percentile intervals of a mean of 400 pairs: within 0.2 SE of the normal one
    assert wide[1] - d.mean() == pytest.approx(1.96 * se, abs=0.2 * se)
    assert narrow[1] - d.mean() == pytest.approx(1.645 * se, abs=0.2 * se)


def test_global_rescale_is_one_factor_for_the_whole_vector(vector, tmp_path):
    base, ft, _ = vector
    out = {m: tmp_path / f"{m}.safetensors" for m in ("global", "tensor")}
    for mode, path in out.items():
        build_task_vectors(Checkpoint(base), [(Checkpoint(ft), path)], 0.3, rescale=mode,
                           progress=False)  # fmt: skip
    entries = TaskVector(out["global"]).entries
    factors = {e["scale"] for e in entries.values()}
    full = sum(e["norm"] ** 2 for e in entries.values())
    kept = sum(e["sparse_norm"] ** 2 for e in entries.values())
    assert len(factors) == 1 and factors.pop() == pytest.approx((full / kept) ** 0.5)
    per_tensor = {name: e["scale"] for name, e in TaskVector(out["tensor"]).entries.items()}
    for name, e in entries.items():
        assert per_tensor[name] == pytest.approx(e["norm"] / e["sparse_norm"])
    assert len({round(f, 6) for f in per_tensor.values()}) > 1  # the two modes differ


def test_merge_dtype_override_and_bad_scales(vector, tmp_path):
    from deltalab.errors import ConfigError
    from deltalab.merging.disk import merge

    base, _, path = vector
    merge(Checkpoint(base), [(TaskVector(path), 1.0)], tmp_path / "bf16", dtype="bfloat16",
          progress=False)  # fmt: skip
    with safe_open(f"{tmp_path}/bf16/model.safetensors", "pt") as f:
        w = f.get_tensor("transformer.h.0.mlp.c_fc.weight")
    assert w.dtype == torch.bfloat16
    fp32 = tmp_path / "fp32"
    merge(Checkpoint(base), [(TaskVector(path), 1.0)], fp32, progress=False)
    with safe_open(f"{fp32}/model.safetensors", "pt") as f:
        assert torch.equal(w, f.get_tensor("transformer.h.0.mlp.c_fc.weight").bfloat16())
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="finite"):
            merge(Checkpoint(base), [(TaskVector(path), bad)], tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_bf16_vector_values_round_the_fp32_values(vector, tmp_path):
    base, ft, path = vector
    half = tmp_path / "bf16.safetensors"
    build_task_vectors(Checkpoint(base), [(Checkpoint(ft), half)], 0.3, values_dtype="bfloat16",
                       progress=False)  # fmt: skip
    name = "transformer.h.1.attn.c_proj.weight"
    exact, rounded = TaskVector(path).dense(name), TaskVector(half).dense(name)
    assert torch.equal(rounded, exact.bfloat16().float())
    assert not torch.equal(rounded, exact)


def test_a_stage_turns_a_user_error_into_exit_2(monkeypatch, capsys, tmp_path):
    from deltalab import stage
    from deltalab.errors import DataError

    def main(params, cond):
        raise DataError(f"{cond}: no such file")

    monkeypatch.setattr("sys.argv", ["x.py", "--cond", "baseline"])
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])
    with pytest.raises(SystemExit) as exit_info:
        stage.run(main, cond=str)
    assert exit_info.value.code == 2
    assert "error: baseline: no such file" in capsys.readouterr().err


def _eos_at_positions(tokenizer, stop_positions: set[int], n_positions: int = 64):
    """A 1-layer GPT-2 (n_embd 2) whose first answer token is EOS exactly when the prompt's last
    token sits at a position in `stop_positions`, and `<MUL_2_3_6>` otherwise (then forever).

    The block adds nothing (attention and MLP output projections are zero), so the final layer
    norm sees wte[token] + wpe[position], which it maps to ±(1, -1): the sign picks EOS or the other
    token.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_layer=1,
        n_head=1,
        n_embd=2,
        n_positions=n_positions,
        vocab_size=len(tokenizer),
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config).eval()
    other = tokenizer.convert_tokens_to_ids("<MUL_2_3_6>")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.ln_f.weight.fill_(1.0)
        for pos in range(n_positions):
            model.transformer.wpe.weight[pos] = torch.tensor(
                [1.0, 0.0] if pos in stop_positions else [0.0, 1.0]
            )
        model.transformer.wte.weight[other] = torch.tensor([0.0, 100.0])  # once out, it stays
        model.lm_head.weight[tokenizer.eos_token_id] = torch.tensor([50.0, -50.0])
        model.lm_head.weight[other] = torch.tensor([-50.0, 50.0])
    return model


@pytest.fixture(scope="module")
def stop_case():
    """Five questions of different prompt lengths; the model stops on questions 1 and 3 only."""
    from deltalab.evaluation.prompts import format_prompt
    from deltalab.evaluation.scoring import prepare_gsm8k_rows
    from tests.evaluation_fixtures import build_tokenizer

    tokenizer = build_tokenizer()
    questions = [f"What is 2 times 3?{' Tom' * k}" for k in (0, 1, 3, 6, 10)]
    prompts = [format_prompt(tokenizer, q) for q in questions]
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert len(set(lengths)) == 5
    stop = {1, 3}
    model = _eos_at_positions(tokenizer, {lengths[i] - 1 for i in stop})
    rows = prepare_gsm8k_rows([{"question": q, "answer": "#### 6"} for q in questions])
    return model, tokenizer, rows, stop


def test_stop_rate_counts_the_responses_that_emitted_eos(stop_case):
    from deltalab.evaluation.engine import HFEngine
    from deltalab.evaluation.params import EvaluateParams
    from deltalab.evaluation.scoring import evaluate_model

    model, tokenizer, rows, stop = stop_case
    params = EvaluateParams(max_new_tokens=4, batch_size=2, probes=False)
    result = evaluate_model(HFEngine(model, tokenizer), rows, None, params, progress=False)
    stopped = [r["stopped"] for r in result.predictions]
    assert stopped == [i in stop for i in range(5)]
    assert [r["num_tokens"] for r in result.predictions] == [4, 1, 4, 1, 4]
    metrics = result.metrics["gsm8k"]
    assert metrics["stop_rate"] == 2 / 5
    assert metrics["mean_response_tokens"] == (4 + 1 + 4 + 1 + 4) / 5
    # the responses themselves: EOS at once, or the other token up to the budget
    responses = [r["response"] for r in result.predictions]
    assert responses == ["" if i in stop else "<MUL_2_3_6>" * 4 for i in range(5)]


def test_behavior_stop_rates_count_the_responses_that_emitted_eos(stop_case):
    """Greedy and sampled: the forced model's margin (100 logits) makes sampling deterministic."""
    from deltalab.evaluation.behavior import evaluate_behavior, summarize_model
    from deltalab.evaluation.engine import HFEngine
    from deltalab.evaluation.params import BehaviorParams

    model, tokenizer, rows, stop = stop_case
    params = BehaviorParams(
        samples=3, max_new_tokens=4, batch_size=4, models=["sft_gsm8k"], pairs=[]
    )
    records = evaluate_behavior("sft_gsm8k", HFEngine(model, tokenizer), rows, params)
    assert [r["greedy_stopped"] for r in records] == [i in stop for i in range(5)]
    assert [r["sample_stopped"] for r in records] == [[i in stop] * 3 for i in range(5)]
    length = summarize_model(records)["length"]
    assert (length["greedy_stop_rate"], length["sample_stop_rate"]) == (2 / 5, 6 / 15)
    assert length["greedy_tokens"] == length["sample_tokens"] == 14 / 5


@pytest.mark.parametrize("value", ["true", 1, 0, None, 1.0, [True]])
def test_a_non_bool_correct_in_a_predictions_file_is_a_clear_error(tmp_path, value):
    """JSON `1` or `"true"` would count as correct (and `"false"` too) if it were let through."""
    import json

    from deltalab.errors import DataError
    from deltalab.evaluation.compare import load_predictions

    rows = [
        {"id": f"q{i}", "task": "gsm8k", "family": "gsm8k", "gold": "1", "correct": True}
        for i in range(3)
    ]
    rows[1]["correct"] = value
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"p\.jsonl: record 2: 'correct' must be true or false"):
        load_predictions(path)
    rows[1]["correct"] = False
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["correct"] for r in load_predictions(path)] == [True, False, True]
