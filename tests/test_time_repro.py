"""tools/time_repro.py: each stage's seconds run from its "Running stage" line to the next."""

from __future__ import annotations

from tools.time_repro import StageClock, table


def test_each_stage_runs_until_the_next_one_starts():
    ticks = iter([0.0, 2.0, 10.0, 11.0, 40.0, 45.0])
    clock = StageClock(clock=lambda: next(ticks))  # start: 0
    for line in [
        "Verifying data sources\n",  # before any stage: nobody's time
        "Running stage 'prepare_data':\n",  # 2
        "> python stages/prepare_data.py\n",
        "Running stage 'pretrain@baseline-0':\n",  # 10
        "Stage 'build_tokenizer' didn't change, skipping\n",
        "Running stage 'pretrain@baseline-1':\n",  # 11
        "Running stage 'compare':\n",  # 40
    ]:
        clock.feed(line)
    seconds, total = clock.finish()  # 45
    assert seconds == {
        "prepare_data": 8.0,
        "pretrain@baseline-0": 1.0,
        "pretrain@baseline-1": 29.0,
        "compare": 5.0,
    }
    assert total == 45.0
    text = table(seconds, total)
    assert "| pretrain | 2 | 30 | 67% |" in text  # summed per stage kind, largest first
    assert text.index("| pretrain | 2") < text.index("| prepare_data | 1")
    assert "total: 45 s (0.8 min), 4 stages run" in text
