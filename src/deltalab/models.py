"""Model construction and Hugging Face checkpoint I/O (safetensors only; checkpoint code runs only
when a profile opts in with `runtime.trust_remote_code`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from deltalab.errors import CheckpointError
from deltalab.schema.model import ModelParams
from deltalab.schema.runtime import RuntimeParams
from deltalab.tensors.imports import resolve


def _causal_loss(model: PreTrainedModel) -> PreTrainedModel:
    """Name the loss of a model whose class matches no transformers loss type (GPT2LMHeadModel):
    unnamed, the Trainer counts label position 0, which nothing predicts, among the tokens it
    divides by, and a 128-token block reports 127/128 of its loss."""
    if getattr(model, "loss_type", None) is None:
        model.loss_type = "ForCausalLM"
    return model


def build_gpt2(
    params: ModelParams, tokenizer: PreTrainedTokenizerBase, seed: int
) -> GPT2LMHeadModel:
    """A GPT-2 architecture from scratch whose special ids match the locally built tokenizer.

    GPT-2's tanh-approximated GELU runs as torch's fused kernel (`gelu_pytorch_tanh`, the same
    function as the default `gelu_new`, which takes seven elementwise ops each way and was a third
    of a tiny model's CPU forward)."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        activation_function="gelu_pytorch_tanh",
        n_positions=params.n_positions,
        n_embd=params.n_embd,
        n_layer=params.n_layer,
        n_head=params.n_head,
        resid_pdrop=params.dropout,
        embd_pdrop=params.dropout,
        attn_pdrop=params.dropout,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return _causal_loss(GPT2LMHeadModel(config))


def configure_torch(runtime: RuntimeParams) -> None:
    if runtime.torch_threads:
        torch.set_num_threads(runtime.torch_threads)


def resolve_device(device: str) -> str:
    """The device to load onto: `auto` picks cuda when available; `cuda` without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(
            f"device {device!r} is not a torch device (cpu, cuda, cuda:N, auto)"
        ) from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r} was requested but no CUDA device is available")
    return device


def runtime_dtype(runtime: RuntimeParams, fallback: str = "float32") -> str:
    """The dtype a stage loads a model in: bf16 where `runtime.bf16` asks for it and the model
    runs on CUDA; on the CPU `fallback` (fp32: CPU bf16 matmuls are slow and lose precision)."""
    on_cuda = resolve_device(runtime.device).startswith("cuda")
    return "bfloat16" if runtime.bf16 and on_cuda else fallback


def _torch_dtype(dtype: str) -> torch.dtype:
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise CheckpointError(f"dtype {dtype!r} is not a torch dtype (float32, bfloat16, float16)")
    return value


def _first_line(exc: BaseException) -> str:
    # transformers' messages can list every supported class; the first line says what went wrong
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return lines[0][:300]


def _checkpoint_source(
    path: str | os.PathLike, revision: str | None, trust_remote_code: bool, hub: bool
) -> tuple[str, dict]:
    """(name, from_pretrained kwargs). A local directory never reaches the network; anything else
    is a hub id when `hub` allows it (fetched at `revision`), else a missing directory."""
    local = Path(path).expanduser()
    if local.exists() or not hub:
        local = resolve(local) if local.is_dir() else local  # an import: its verified files
        if not local.is_dir():
            raise CheckpointError(f"{local}: checkpoint directory not found")
        if not (local / "config.json").is_file():
            raise CheckpointError(f"{local}: not a Hugging Face checkpoint (no config.json)")
        return str(local), dict(local_files_only=True, trust_remote_code=trust_remote_code)
    try:
        validate_repo_id(str(path))
    except HFValidationError as exc:
        raise CheckpointError(f"{path}: neither a checkpoint directory nor a hub id") from exc
    return str(path), dict(revision=revision, trust_remote_code=trust_remote_code)


def _hf_load(name: str, failure: str, load: Callable[[], Any]) -> Any:
    try:
        return load()
    except Exception as exc:  # transformers raises OSError/ValueError/KeyError variously
        raise CheckpointError(f"{name}: {failure} ({_first_line(exc)})") from exc


def _load_resolved(
    name: str, source: dict, device: str, torch_dtype: torch.dtype
) -> PreTrainedModel:
    model, info = _hf_load(
        name,
        "not a loadable causal language model",
        lambda: AutoModelForCausalLM.from_pretrained(
            name, **source, use_safetensors=True, dtype=torch_dtype, output_loading_info=True
        ),
    )
    broken = sorted(info.get("missing_keys", ())) + sorted(
        str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", ())
    )
    if broken:
        raise CheckpointError(
            f"{name}: {len(broken)} weights missing or mis-shaped in the checkpoint "
            f"(e.g. {', '.join(broken[:3])})"
        )
    return _causal_loss(model).to(device).eval()


def load_model(
    path: str | os.PathLike,
    *,
    hub: bool = False,
    revision: str | None = None,
    trust_remote_code: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
) -> PreTrainedModel:
    """A causal LM in eval mode from a local checkpoint directory (or, with `hub`, a hub id).

    Safetensors only; checkpoint code runs only with `trust_remote_code` (a profile's opt-in).
    Every failure is a CheckpointError naming `path`, including weights that are missing or
    mis-shaped, which transformers would otherwise initialize randomly with a mere warning.
    """
    device, torch_dtype = resolve_device(device), _torch_dtype(dtype)  # fail before any I/O
    name, source = _checkpoint_source(path, revision, trust_remote_code, hub)
    return _load_resolved(name, source, device, torch_dtype)


def load_causal_lm(
    path: str | os.PathLike,
    *,
    hub: bool = False,
    revision: str | None = None,
    trust_remote_code: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) of a checkpoint (see `load_model`); the tokenizer must fit the model."""
    device, torch_dtype = resolve_device(device), _torch_dtype(dtype)
    name, source = _checkpoint_source(path, revision, trust_remote_code, hub)
    model = _load_resolved(name, source, device, torch_dtype)
    tokenizer = _hf_load(
        name, "cannot load the tokenizer", lambda: AutoTokenizer.from_pretrained(name, **source)
    )
    n_embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embeddings:
        raise CheckpointError(
            f"{name}: the tokenizer has {len(tokenizer)} tokens but the model only "
            f"{n_embeddings} embeddings"
        )
    return model, tokenizer


# How a tokenizer was loaded, not what it is: transformers writes these load options back into
# tokenizer_config.json (`local_files_only` follows HF_HUB_OFFLINE), which would give the same
# artifact another hash, and DVC would re-run everything downstream.
LOAD_OPTIONS = (
    "local_files_only", "is_local", "_commit_hash", "cache_dir", "revision", "token",
    "trust_remote_code", "force_download", "proxies", "subfolder",
)  # fmt: skip


def save_checkpoint(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out: Path,
    state_dict: dict | None = None,
) -> None:
    """Save as safetensors + config + tokenizer, loadable offline by AutoModelForCausalLM; the
    bytes describe the artifact only, whatever the environment it was loaded in. `state_dict`:
    the full weights when the model's own are sharded (FSDP)."""
    model.save_pretrained(out, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(out)
    config_path = Path(out) / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    cleaned = {k: v for k, v in config.items() if k not in LOAD_OPTIONS}
    config_path.write_text(json.dumps(cleaned, indent=2, ensure_ascii=False) + "\n")
