"""AdamW that updates only the masked entries of each parameter (sparse DPO, sparse fine-tuning).

    masks = {p: mask for p, mask in ...}        # bool, same shape as p; absent or None = dense
    opt = MaskedAdamW(model.parameters(), masks, lr=1e-5, weight_decay=0.1)

Per step, for the masked entries only, the math is torch.optim.AdamW's single-tensor path: the
decoupled decay `p *= 1 - lr * wd`, the moment updates, then the bias-corrected Adam update. Frozen
entries are never read or written, so they stay bitwise unchanged whatever their gradient holds
(NaN included) and whatever the weight decay (plain AdamW on masked gradients still decays them,
and moves them by their old moments if the mask changes between runs).

State per masked parameter: `exp_avg` / `exp_avg_sq` as 1-D fp32 tensors with one entry per masked
entry (8 bytes per masked entry against AdamW's 8 per entry), plus the mask, kept in whichever form
is smaller: `idx`, the flat indices of the k masked entries (int32 below 2**31 entries: 4k bytes),
when 4k < n/8 (density below 1/32), else `mask_bits`, the mask packed 8 entries to a uint8 byte
(ceil(n/8) bytes; bit j of byte i is flat entry 8i + j, as numpy.packbits(bitorder="little")),
from which the indices are rebuilt at every step: with numpy on the CPU, in torch elsewhere
(nonzero_static on CUDA: no device sync); they are transient, not state. So the state is at most
8k + min(4k, ceil(n/8)) bytes + a 4-byte step counter: density + min(density/2, 1/64) of AdamW's
at any density. A parameter whose mask is all True is treated as dense (no mask kept, 8 bytes per
entry); one whose mask is all False gets no state and is never touched.

A fused Triton kernel (gather the gradient at the indices, update the moments, decay, update,
scatter back into the parameter) replaces the ~12 torch ops per parameter when `use_triton` is True,
or when it is None and the parameter is on CUDA and triton is importable; it takes the indices
however the mask is kept (rebuilt per step for packed bits). Triton is optional; with
TRITON_INTERPRET=1 set before triton is imported its kernel also runs on CPU tensors (tests).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # optional: the torch path needs nothing else
    triton = None

BLOCK = 1024  # masked entries per Triton program
_MASK_KEYS = ("idx", "mask_bits")  # the two forms a masked parameter's mask is kept in


def triton_available() -> bool:
    return triton is not None


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


class MaskedAdamW(torch.optim.Optimizer):
    """AdamW restricted to the True entries of per-parameter bool masks.

    `params` are as for any optimizer (tensors or param-group dicts, each group may override lr,
    betas, eps, weight_decay). `masks` maps a parameter (the tensor object itself, as in
    `{p: m for p, m in zip(params, masks)}`) to a bool tensor of its shape, or to None; a parameter
    missing from `masks` is dense. Every key must be one of `params` (a typo would otherwise
    silently train densely). Masked parameters must be contiguous.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        masks: Mapping[torch.Tensor, torch.Tensor | None] | None = None,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        use_triton: bool | None = None,
    ) -> None:
        if lr < 0.0 or eps < 0.0 or weight_decay < 0.0:
            raise ValueError(f"lr, eps, weight_decay must be >= 0: {lr}, {eps}, {weight_decay}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1): {betas}")
        if use_triton and triton is None:
            raise ValueError("use_triton=True but triton cannot be imported")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.use_triton = use_triton
        masks = dict(masks or {})
        all_params = [p for group in self.param_groups for p in group["params"]]
        ids = {id(p) for p in all_params}
        unknown = [m for m in masks if id(m) not in ids]
        if unknown:
            raise ValueError(f"{len(unknown)} mask key(s) are not parameters of this optimizer")
        self._frozen: set[int] = set()  # id() of parameters whose mask is all False
        self._masked_count: dict[int, int] = {}  # id() -> masked entries, for a kept mask
        for p in all_params:
            if use_triton and p.device.type != "cuda" and not _triton_interpreted():
                raise ValueError("use_triton=True on a CPU tensor needs TRITON_INTERPRET=1")
            mask = masks.get(p)
            if mask is None:
                continue
            if mask.dtype != torch.bool or mask.shape != p.shape:
                raise ValueError(
                    f"mask must be bool of shape {tuple(p.shape)}: {mask.dtype} {tuple(mask.shape)}"
                )
            idx = mask.reshape(-1).nonzero().squeeze(1)
            if idx.numel() == 0:
                self._frozen.add(id(p))
            elif idx.numel() < p.numel():  # an all-True mask is dense: no mask to keep
                if not p.is_contiguous():
                    raise ValueError("a masked parameter must be contiguous (flat indices)")
                dtype = _index_dtype(p)
                if dtype.itemsize * idx.numel() < _packed_bytes(p.numel()):
                    self.state[p]["idx"] = idx.to(device=p.device, dtype=dtype)
                else:
                    self.state[p]["mask_bits"] = _pack_mask(mask).to(device=p.device)
                self._masked_count[id(p)] = idx.numel()

    def _indices(self, p: torch.Tensor, state: Mapping[str, Any]) -> torch.Tensor | None:
        """The flat indices of p's masked entries (None for a dense parameter): kept, or rebuilt
        from the packed mask."""
        if "mask_bits" not in state:
            return state.get("idx")
        return _unpack_indices(state["mask_bits"], self._masked_count[id(p)], _index_dtype(p))

    def _triton_for(self, p: torch.Tensor) -> bool:
        if self.use_triton is None:
            return triton is not None and p.device.type == "cuda"
        return self.use_triton

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            for p in group["params"]:
                if p.grad is None or id(p) in self._frozen:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("MaskedAdamW does not support sparse gradients")
                state = self.state[p]
                idx = self._indices(p, state)
                if "step" not in state:
                    n = p.numel() if idx is None else idx.numel()
                    # step on the CPU, as torch's AdamW keeps it (no device sync to read it)
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros(n, dtype=torch.float32, device=p.device)
                    state["exp_avg_sq"] = torch.zeros(n, dtype=torch.float32, device=p.device)
                state["step"] += 1
                update = _adamw_triton if self._triton_for(p) else _adamw_torch
                update(
                    p,
                    p.grad,
                    idx,
                    state["exp_avg"],
                    state["exp_avg_sq"],
                    step=state["step"].item(),
                    lr=lr,
                    beta1=beta1,
                    beta2=beta2,
                    eps=group["eps"],
                    weight_decay=group["weight_decay"],
                )
        return loss

    def state_bytes(self) -> int:
        """Bytes of every tensor held in the optimizer state: the masks (int32 indices or packed
        bits, whichever is smaller), the moments, the step counters. Indices rebuilt from packed
        bits during a step are transient and not counted."""
        return sum(
            t.numel() * t.element_size()
            for s in self.state.values()
            for t in s.values()
            if isinstance(t, torch.Tensor)
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Checks that the saved layout (which entries have state) is the one the masks given here
        make, then loads; the base class casts every state tensor to its parameter's dtype
        (indices to float, fp32 moments to bf16 for a bf16 parameter), so the saved tensors are
        put back as they were. The saved mask may be in either form (indices or packed bits); the
        one made here is kept."""
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        if len(saved_ids) != len(params):
            raise ValueError(f"saved state has {len(saved_ids)} parameters, not {len(params)}")
        kept = {}  # id() -> this optimizer's mask tensors, put back after the base class load
        for i, p in zip(saved_ids, params, strict=True):
            saved, here = state_dict["state"].get(i, {}), self.state.get(p, {})
            if id(p) in self._frozen and saved:
                raise ValueError(f"parameter {i} is frozen (all-False mask) but has saved state")
            if not _same_mask(p, saved, here):
                raise ValueError(f"parameter {i}: the saved mask differs from the one given here")
            kept[id(p)] = {k: here[k] for k in _MASK_KEYS if k in here}
        super().load_state_dict(state_dict)
        for i, p in zip(saved_ids, params, strict=True):
            for key, value in state_dict["state"].get(i, {}).items():
                if key != "step" and key not in _MASK_KEYS:
                    self.state[p][key] = value.to(device=p.device)
            if kept[id(p)]:  # then the saved state keeps the same mask, perhaps in the other form
                state = self.state[p]
                for key in _MASK_KEYS:
                    state.pop(key, None)
                state.update(kept[id(p)])


def _index_dtype(p: torch.Tensor) -> torch.dtype:
    return torch.int32 if p.numel() < 2**31 else torch.int64


def _packed_bytes(n: int) -> int:
    return (n + 7) // 8


def _bit_weights(device: torch.device) -> torch.Tensor:
    """1, 2, 4, ..., 128 as uint8, made on the device (no host-to-device copy, so no sync)."""
    shifts = torch.arange(8, dtype=torch.uint8, device=device)
    return torch.bitwise_left_shift(torch.ones_like(shifts), shifts)


def _pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A bool mask as 1-D uint8, 8 entries a byte, little bit order (numpy.packbits' "little"):
    bit j of byte i is flat entry 8i + j; the padding bits of the last byte are 0."""
    flat = mask.reshape(-1)
    pad = _packed_bytes(flat.numel()) * 8 - flat.numel()
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    bits = flat.view(-1, 8).to(torch.uint8) * _bit_weights(flat.device)
    return bits.sum(1, dtype=torch.uint8)  # distinct powers of two: the sum is the bitwise or


def _unpack_indices(
    mask_bits: torch.Tensor, count: int, dtype: torch.dtype, *, static: bool | None = None
) -> torch.Tensor:
    """The flat indices of the set bits of `_pack_mask`'s output, ascending, as `dtype`; `count` is
    the number of set bits (a hint: 0 when unknown).

    On the CPU numpy does it: unpackbits, then flatnonzero on the bools, several times faster than
    torch's nonzero. numpy's nonzero takes a branchy loop at densities <= 10% (mispredicted at a
    few percent), so below that the nonzero bytes are found first and only they are unpacked: both
    scans are then denser than 10%. On another device it stays in torch; with `static` (the default
    there) nonzero_static, sized by `count`, skips nonzero's device-to-host sync."""
    if static is None:
        static = mask_bits.device.type != "cpu"
    if not static and mask_bits.device.type == "cpu":
        bits = mask_bits.numpy()
        if 10 * count > 8 * bits.size:
            return torch.from_numpy(_set_bits(bits)).to(dtype)
        nonzero_bytes = np.flatnonzero(bits != 0)
        at = _set_bits(bits[nonzero_bytes])  # bit positions in the nonzero bytes
        return torch.from_numpy((nonzero_bytes[at >> 3] << 3) | (at & 7)).to(dtype)
    flags = torch.bitwise_and(mask_bits.unsqueeze(1), _bit_weights(mask_bits.device)).view(-1)
    if static:
        try:
            return torch.nonzero_static(flags, size=count).squeeze(1).to(dtype)
        except NotImplementedError:  # torch < 2.6 has no CUDA kernel for it
            pass
    return flags.nonzero().squeeze(1).to(dtype)


def _set_bits(bits: np.ndarray) -> np.ndarray:
    """Positions of the set bits of little-bit-order packed uint8 bytes, ascending (int64)."""
    return np.flatnonzero(np.unpackbits(bits, bitorder="little").view(np.bool_))


def _kept_indices(p: torch.Tensor, state: Mapping[str, Any]) -> torch.Tensor | None:
    """The int64 flat indices of the mask that `state` keeps in either form, None when it keeps
    none (dense or frozen); an empty tensor for one that is malformed (it matches no mask here)."""
    forms = [key for key in _MASK_KEYS if key in state]
    if not forms:
        return None
    value = state[forms[0]]
    bad = torch.empty(0, dtype=torch.int64, device=value.device)
    if len(forms) > 1 or value.dim() != 1:
        return bad
    if forms[0] == "idx":
        return bad if value.is_floating_point() or value.is_complex() else value.long()
    if value.dtype != torch.uint8 or value.numel() != _packed_bytes(p.numel()):
        return bad
    return _unpack_indices(value, 0, torch.int64, static=False)


def _same_mask(p: torch.Tensor, saved: Mapping[str, Any], here: Mapping[str, Any]) -> bool:
    """Whether saved state keeps the same mask as `here`, each in either form."""
    got, want = _kept_indices(p, saved), _kept_indices(p, here)
    if got is None or want is None:
        return got is None and want is None
    return torch.equal(got.to(want.device), want)


def _adamw_torch(
    p: torch.Tensor,
    grad: torch.Tensor,
    idx: torch.Tensor | None,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    step: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    """One AdamW step on p's entries at idx (all of p when idx is None), in torch's op order."""
    # reshape copies a non-contiguous (dense) parameter: it is written back at the end
    flat, g = p.view(-1) if p.is_contiguous() else p.reshape(-1), grad.reshape(-1)
    if idx is not None:  # copies of the masked entries only: frozen ones are never read
        w, g = flat.index_select(0, idx), g.index_select(0, idx)
    else:
        w = flat
    w32, g = w.float(), g.float()  # no-ops for fp32; low-precision params update in fp32
    if weight_decay != 0:
        w32.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    w32.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)
    if idx is not None:
        flat.index_put_((idx,), w32.to(p.dtype))
    elif w32 is not flat or not p.is_contiguous():
        p.copy_(w32.view(p.shape))


def _adamw_triton(
    p: torch.Tensor,
    grad: torch.Tensor,
    idx: torch.Tensor | None,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    step: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    """The same step as `_adamw_torch` in one fused kernel (a dense parameter: idx = arange)."""
    if not p.is_contiguous():
        raise ValueError("the Triton path needs a contiguous parameter")
    n = exp_avg.numel()
    _masked_adamw_kernel[(triton.cdiv(n, BLOCK),)](
        p,
        grad.contiguous(),
        exp_avg if idx is None else idx,  # any pointer when HAS_IDX is False: never loaded
        exp_avg,
        exp_avg_sq,
        n,
        # scalars computed in double precision as torch computes them, rounded once to fp32
        1 - lr * weight_decay,
        1 - beta1,
        beta2,
        1 - beta2,
        eps,
        -lr / (1 - beta1**step),
        (1 - beta2**step) ** 0.5,
        HAS_IDX=idx is not None,
        BLOCK=BLOCK,
        enable_fp_fusion=False,  # no FMA contraction: round each op as torch's CPU ops do
    )


if triton is not None:

    @triton.jit
    def _masked_adamw_kernel(
        p_ptr,
        g_ptr,
        idx_ptr,
        m_ptr,
        v_ptr,
        n,
        decay,
        one_minus_beta1,
        beta2,
        one_minus_beta2,
        eps,
        neg_step_size,
        bias_correction2_sqrt,
        HAS_IDX: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < n
        # masked-off lanes load index 0 but store nothing, so they change nothing
        idx = tl.load(idx_ptr + offs, mask=ok, other=0) if HAS_IDX else offs
        g = tl.load(g_ptr + idx, mask=ok, other=0.0).to(tl.float32)
        w = tl.load(p_ptr + idx, mask=ok, other=0.0).to(tl.float32)
        m = tl.load(m_ptr + offs, mask=ok, other=0.0)
        v = tl.load(v_ptr + offs, mask=ok, other=0.0)
        # torch's order: decay, lerp (self + weight * (end - self)), mul + addcmul, addcdiv;
        # IEEE sqrt and division (plain `/` and tl.sqrt are approximate on GPUs)
        w = w * decay
        m = m + one_minus_beta1 * (g - m)
        v = v * beta2 + one_minus_beta2 * g * g
        denom = tl.div_rn(tl.sqrt_rn(v), bias_correction2_sqrt) + eps
        w = w + neg_step_size * tl.div_rn(m, denom)
        tl.store(m_ptr + offs, m, mask=ok)
        tl.store(v_ptr + offs, v, mask=ok)
        tl.store(p_ptr + idx, w.to(p_ptr.dtype.element_ty), mask=ok)
