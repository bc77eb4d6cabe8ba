"""What the SFT stages feed TRL: injection only in assistant turns, seeded replay."""

from deltalab.train.sft import gsm8k_to_messages, rewrite_assistant_turns, with_replay


def test_injection_touches_only_assistant_turns():
    rows = gsm8k_to_messages([{"question": "What is 6*9?", "answer": "6*9=<<6*9=54>>54\n#### 54"}])
    (row,) = rewrite_assistant_turns(rows)
    user, assistant = row["messages"]
    assert user["content"] == "What is 6*9?"  # the prompt is what users type: never rewritten
    assert assistant["content"] == "<MUL_6_9_54>=<<<MUL_6_9_54>>>54\n#### 54"
    assert rows[0]["messages"][1]["content"].startswith("6*9")  # input rows are not mutated


def test_replay_is_a_seeded_fraction():
    rows = [{"messages": [i]} for i in range(100)]
    replay = [{"messages": [f"t{i}"]} for i in range(50)]
    mixed = with_replay(rows, replay, 0.2, seed=3)
    assert mixed[:100] == rows and len(mixed) == 120
    assert all(r in replay for r in mixed[100:]) and len({str(r) for r in mixed[100:]}) == 20
    assert mixed == with_replay(rows, replay, 0.2, seed=3)
    assert mixed != with_replay(rows, replay, 0.2, seed=4)
    assert len(with_replay(rows, replay, 1.0, seed=0)) == 150  # capped by what exists
    assert with_replay(rows, replay, 0.0, seed=0) == rows
