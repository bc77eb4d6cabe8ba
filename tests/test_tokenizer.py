"""The study tokenizer and chat template: one vocabulary, mul tokens atomic, EOS is a label."""

import torch
from datasets import Dataset
from transformers import AutoTokenizer
from trl import SFTConfig, SFTTrainer

from deltalab.evaluation.prompts import format_prompt, plain_prompt
from deltalab.models import build_gpt2
from deltalab.schema.model import ModelParams
from deltalab.tokenizer import EOS_TOKEN, PAD_TOKEN, add_study_tokens, mul_token_ids
from deltalab.tokens import MUL_TOKENS, inject_mul_tokens

from .helpers import tiny_tokenizer

CHAT = [
    {"role": "user", "content": "What is 6 times 9?"},
    {"role": "assistant", "content": "6*9=54. The answer is 54."},
]


def test_vocabulary_layout():
    tok = tiny_tokenizer()
    ids = mul_token_ids(tok)
    assert len(tok) % 64 == 45  # base padded to a multiple of 64, then the 45 mul tokens
    assert ids == list(range(len(tok) - 45, len(tok)))
    assert tok.eos_token == EOS_TOKEN and tok.pad_token == PAD_TOKEN
    assert tok.eos_token_id != tok.pad_token_id  # masking pads never masks EOS


def test_mul_tokens_are_single_ids_and_decode_verbatim():
    tok = tiny_tokenizer()
    for token in MUL_TOKENS:
        assert tok(token, add_special_tokens=False)["input_ids"] == [
            tok.convert_tokens_to_ids(token)
        ]
    text = inject_mul_tokens("So 9*6=54 apples.")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("<MUL_6_9_54>") in ids
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_same_vocabulary_for_both_conditions(tmp_path):
    tok = tiny_tokenizer()
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.get_vocab() == tok.get_vocab()
    assert reloaded.chat_template == tok.chat_template


def test_chat_template_renders_the_eval_prompt():
    tok = tiny_tokenizer()
    text = tok.apply_chat_template(CHAT, tokenize=False)
    assert text == "User: What is 6 times 9?\nAssistant: 6*9=54. The answer is 54.<|endoftext|>"
    prompt = tok.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True)
    # our template renders our plain prompt: the tiny study prompts as before the chat templates
    assert prompt == plain_prompt("What is 6 times 9?") == format_prompt(tok, "What is 6 times 9?")


def test_assistant_mask_covers_answer_and_eos_only():
    tok = tiny_tokenizer()
    out = tok.apply_chat_template(
        CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    labelled = [i for i, m in zip(ids, mask, strict=True) if m]
    assert tok.decode(labelled) == " 6*9=54. The answer is 54.<|endoftext|>"
    assert labelled[-1] == tok.eos_token_id


def test_sft_trainer_labels_include_eos(tmp_path):
    """Through TRL itself: the collated batch has EOS as a label and no label on the prompt."""
    tok = tiny_tokenizer()
    model = build_gpt2(ModelParams(n_layer=1, n_head=2, n_embd=32, n_positions=128), tok, seed=0)
    data = Dataset.from_list(
        [{"messages": CHAT}, {"messages": [CHAT[0], {"role": "assistant", "content": "54"}]}]
    )
    config = SFTConfig(
        output_dir=str(tmp_path),
        assistant_only_loss=True,
        max_length=64,
        report_to="none",
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=2,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        kept = labels[labels != -100]
        assert kept[-1].item() == tok.eos_token_id
        assert tok.decode(kept).startswith(" ") and "User" not in tok.decode(kept)
        assert torch.equal(kept, ids[labels != -100])


def test_hub_tokenizer_path_adds_study_tokens(tmp_path):
    """The real-profile path (GPT-2's tokenizer from a hub-format directory) gets the same
    additions; with 50257 ids it becomes the original study's 50349."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from deltalab.tokenizer import load_hub_tokenizer

    base = tiny_tokenizer()
    base.save_pretrained(tmp_path / "tiny")
    tok = add_study_tokens(load_hub_tokenizer(str(tmp_path / "tiny"), revision=None))
    assert len(tok) % 64 == 45 and tok.pad_token_id != tok.eos_token_id

    # GPT-2's shape: 50257 ids, <|endoftext|> the last one, no pad token
    vocab = {f"w{i}": i for i in range(50256)} | {EOS_TOKEN: 50256}
    gpt2_like = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token=EOS_TOKEN)),
        eos_token=EOS_TOKEN,
    )
    assert len(gpt2_like) == 50257 and gpt2_like.pad_token is None
    gpt2_like.save_pretrained(tmp_path / "gpt2")
    tok = add_study_tokens(load_hub_tokenizer(str(tmp_path / "gpt2"), revision=None))
    assert len(tok) == 50349  # 50257 + pad = 50258, 46 reserved to 50304, then 45 mul tokens
    assert (tok.eos_token_id, tok.pad_token_id) == (50256, 50257)
    assert tok.convert_tokens_to_ids(PAD_TOKEN) == 50257
    assert mul_token_ids(tok) == list(range(50304, 50349))
    assert tok.convert_ids_to_tokens([50258, 50303]) == ["<|reserved_0|>", "<|reserved_45|>"]
