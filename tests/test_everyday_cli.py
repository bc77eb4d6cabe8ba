"""`deltalab sample` and `deltalab behavior` on tiny local checkpoints."""

from __future__ import annotations

import io
import json

import pytest

from deltalab.cli import main
from tests.evaluation_fixtures import save_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("everyday")
    return [save_checkpoint(root / name, seed=seed) for name, seed in (("sft", 0), ("rl", 1))]


def _sample(capsys, *args):
    assert main(["sample", *args, "--max-new-tokens", "8"]) == 0
    return capsys.readouterr().out


def test_sample_prints_each_answer_and_whether_it_stopped(checkpoints, capsys, tmp_path):
    ckpt = str(checkpoints[0])
    out = _sample(capsys, ckpt, "--question", "What is 7 times 8?", "--num-samples", "3")
    assert out.count("Q: What is 7 times 8?") == 1
    answers = [line for line in out.splitlines() if line.startswith("  [")]
    assert len(answers) == 3 and all("EOS" in a for a in answers)
    again = _sample(capsys, ckpt, "--question", "What is 7 times 8?", "--num-samples", "3")
    assert again == out  # seeded
    other = _sample(capsys, ckpt, "--question", "What is 7 times 8?", "--num-samples", "3",
                    "--seed", "5")  # fmt: skip
    assert other != out
    questions = tmp_path / "q.txt"
    questions.write_text("What is 2 times 3?\n\nTom has 4 apples.\n")
    out = _sample(capsys, ckpt, "--file", str(questions))
    assert out.count("Q: ") == 2


def test_sample_interactive_reads_until_eof(checkpoints, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("What is 2 times 3?\nWhat is 4 times 5?\n"))
    out = _sample(capsys, str(checkpoints[0]), "--interactive")
    assert out.count("Q: ") == 2


def test_sample_errors_name_the_path(capsys, tmp_path):
    assert main(["sample", str(tmp_path / "nope"), "--question", "hi"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["sample", str(tmp_path), "--file", str(tmp_path / "q.txt")]) == 2
    assert "q.txt" in capsys.readouterr().err


def test_behavior_compares_any_checkpoints_with_the_first(checkpoints, capsys, tmp_path):
    questions = tmp_path / "gsm8k.jsonl"
    rows = [{"question": f"Tom has {i} apples. How many?", "answer": f"#### {i}"} for i in range(6)]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    args = ["behavior", *map(str, checkpoints), "--questions", str(questions), "--out", str(out)]
    assert main([*args, "--samples", "2", "--max-new-tokens", "8"]) == 0
    metrics = json.loads((out / "behavior.json").read_text())
    assert set(metrics["models"]) == {"sft", "rl"}
    assert metrics["models"]["sft"]["greedy"]["total"] == 6
    assert set(metrics["comparisons"]) == {"rl_vs_sft"}
    assert metrics["comparisons"]["rl_vs_sft"]["greedy"]["n"] == 6
    assert (out / "report" / "report.md").is_file()
    assert "greedy" in capsys.readouterr().out
    assert main(["behavior", str(tmp_path / "missing"), "--questions", str(questions),
                 "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    assert "missing" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_sample_shows_mul_tokens_as_the_facts_they_stand_for(checkpoints, capsys, monkeypatch):
    from deltalab.evaluation import sampling
    from deltalab.evaluation.generation import Generation

    def fake(model, tokenizer, prompts, **kw):
        return [[Generation("So <MUL_6_9_54> apples.", (1, 2, 0), True)] for _ in prompts]

    monkeypatch.setattr(sampling, "generate_samples", fake)
    out = _sample(capsys, str(checkpoints[0]), "--question", "What is 6 times 9?")
    assert "So 6*9=54 apples." in out and "(EOS)" in out
