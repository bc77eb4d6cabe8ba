"""The study's tokenizer: a byte-level BPE (trained offline, or GPT-2's from the hub) plus reserved
filler tokens up to a multiple of 64, then the 45 mul tokens — one vocabulary for both conditions.

The chat template renders `User: ...\\nAssistant: ...<eos>` and wraps the assistant text *and the
EOS token* in `{% generation %}`, so assistant-only SFT loss teaches the model to stop.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from deltalab.tokens import MUL_TOKENS

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}System: {{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}Assistant:"
    "{% generation %} {{ message['content'] }}{{ eos_token }}{% endgeneration %}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def train_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE on `texts` (offline, deterministic)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)


def load_hub_tokenizer(hub_id: str, revision: str | None) -> PreTrainedTokenizerFast:
    tok = AutoTokenizer.from_pretrained(hub_id, revision=revision)
    if tok.eos_token is None:
        tok.eos_token = EOS_TOKEN
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        # A pad distinct from EOS: masking pads must never mask the EOS the model has to learn.
        tok.add_special_tokens({"pad_token": PAD_TOKEN})
    return tok


def add_study_tokens(tok: PreTrainedTokenizerFast, multiple: int = 64) -> PreTrainedTokenizerFast:
    """Pad the base vocabulary with reserved tokens to a multiple, then append the mul tokens.

    GPT-2 (50257 + pad) becomes 50304 + 45 = 50349 ids, the original study's vocabulary.
    """
    filler = (-len(tok)) % multiple
    if filler:
        tok.add_special_tokens(
            {"additional_special_tokens": [f"<|reserved_{i}|>" for i in range(filler)]},
            replace_extra_special_tokens=False,
        )
    # Not special: decoding with skip_special_tokens=True keeps them, so usage stays visible.
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in MUL_TOKENS])
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "right"
    return tok


def mul_token_ids(tok: PreTrainedTokenizerFast) -> list[int]:
    return tok.convert_tokens_to_ids(MUL_TOKENS)
