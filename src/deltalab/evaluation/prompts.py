"""The prompt a checkpoint is asked a question with, the same in training, evaluation, behavior,
sampling, the merge search and the masks.

A tokenizer with a chat template gets it (one user turn and the generation prompt: Tulu's and
Llama's headers, Gemma's turns, Qwen's ChatML); one without gets ours, `User: ...\\nAssistant:`,
which is also what the tiny study's own template renders. The text then carries the tokenizer's
BOS when it would add one to plain text (Llama, Gemma) and the template did not, so prompts are
encoded with `add_special_tokens=False` everywhere and still start the way the model was trained.
"""

from __future__ import annotations

PROMPT_TEMPLATE = "User: {question}\nAssistant:"


def plain_prompt(question: str) -> str:
    """Our prompt, for checkpoints whose tokenizer has no chat template."""
    return PROMPT_TEMPLATE.format(question=question)


def format_prompt(tokenizer, question: str) -> str:
    """The prompt text of `question` for the checkpoint `tokenizer` belongs to."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = plain_prompt(question)
    bos = getattr(tokenizer, "bos_token", None)
    if bos and not text.startswith(bos) and _adds_bos(tokenizer):
        text = bos + text
    return text


def _adds_bos(tokenizer) -> bool:
    """Whether encoding plain text with special tokens starts it with BOS (the tokenizer's own
    policy: Llama and Gemma do, GPT-2 and Qwen do not)."""
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id
