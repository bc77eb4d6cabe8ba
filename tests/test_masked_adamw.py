"""MaskedAdamW: torch.optim.AdamW on the masked entries only, frozen entries bitwise unchanged,
state that scales with the density (the mask kept as int32 indices or packed bits, whichever is
smaller), a state_dict round trip, and the Triton kernel against the torch path (interpreted on
CPU; compiled on CUDA when a GPU is present)."""

from __future__ import annotations

import copy
import importlib.util
import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from deltalab.train import masked_adamw
from deltalab.train.masked_adamw import MaskedAdamW

# eps and the gradient scale are chosen so that eps matters (sqrt(v) ~ 1e-2 against eps = 1e-3):
# a misplaced eps or a missing bias correction moves the result far beyond the tolerances
HYPER = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-3, weight_decay=0.1)
TIGHT = dict(rtol=1e-6, atol=1e-8)
HAS_TRITON = importlib.util.find_spec("triton") is not None


def grads_for(params: list[torch.Tensor], step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return [1e-2 * torch.randn(p.shape, generator=g) for p in params]


def random_mask(shape: tuple[int, ...], density: float, seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < density


def leaves(*tensors: torch.Tensor) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(t.clone()) for t in tensors]


def mask_form(opt: MaskedAdamW, p: torch.Tensor) -> str | None:
    """Which form the optimizer keeps p's mask in: "idx", "mask_bits", or None (dense/frozen)."""
    forms = [key for key in ("idx", "mask_bits") if key in opt.state.get(p, {})]
    assert len(forms) <= 1, forms
    return forms[0] if forms else None


def packbits(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.reshape(-1).numpy(), bitorder="little"))


def test_all_ones_mask_matches_torch_adamw():
    """An all-True mask, a None mask and no mask are all plain AdamW, weight decay included."""
    torch.manual_seed(0)
    inits = [torch.randn(40, 30), torch.randn(30), torch.randn(7, 5)]
    ours, ref = leaves(*inits), leaves(*inits)
    opt = MaskedAdamW(ours, {ours[0]: torch.ones(40, 30, dtype=torch.bool), ours[2]: None}, **HYPER)
    ref_opt = torch.optim.AdamW(ref, **HYPER)
    for step in range(20):
        for p, q, g in zip(ours, ref, grads_for(ours, step), strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    for p, q in zip(ours, ref, strict=True):
        torch.testing.assert_close(p, q, **TIGHT)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(opt.state[p][key].view(p.shape), ref_opt.state[q][key])
        assert mask_form(opt, p) is None  # all-True is stored densely: no mask kept
    assert not torch.equal(ours[0], inits[0])


def test_sparse_mask_freezes_the_rest_and_matches_adamw_on_the_masked_entries():
    """5% and 25% masks (kept as packed bits; 300 entries: a ragged last byte) and a 1% mask (kept
    as indices), weight decay 0.1, NaN/inf in frozen gradients: frozen entries are bitwise
    unchanged; masked entries all move and equal dense AdamW run on the masked entries alone."""
    torch.manual_seed(0)
    inits = [torch.randn(64, 50), torch.randn(300), torch.randn(100, 80)]
    masks = [
        random_mask((64, 50), 0.05, 1),
        random_mask((300,), 0.25, 2),
        random_mask((100, 80), 0.01, 6),
    ]
    ours = leaves(*inits)
    opt = MaskedAdamW(ours, dict(zip(ours, masks, strict=True)), **HYPER)
    assert [mask_form(opt, p) for p in ours] == ["mask_bits", "mask_bits", "idx"]
    # the reference: torch's AdamW on 1-D parameters holding only the masked entries
    ref = leaves(*(x[m] for x, m in zip(inits, masks, strict=True)))
    ref_opt = torch.optim.AdamW(ref, **HYPER)
    for step in range(10):
        grads = grads_for(ours, step)
        for p, q, g, m in zip(ours, ref, grads, masks, strict=True):
            q.grad = g[m].clone()
            g[~m] = float("nan")
            g.view(-1)[(~m).view(-1).nonzero()[0]] = float("inf")  # and one inf
            p.grad = g
        opt.step()
        ref_opt.step()
    for p, x, q, m in zip(ours, inits, ref, masks, strict=True):
        assert torch.equal(p[~m], x[~m])
        assert bool((p[m] != x[m]).all())
        torch.testing.assert_close(p[m], q.detach(), **TIGHT)
        torch.testing.assert_close(opt.state[p]["exp_avg"], ref_opt.state[q]["exp_avg"])
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], ref_opt.state[q]["exp_avg_sq"])
        assert torch.isfinite(p).all()


@pytest.mark.parametrize(
    ("density", "form"), [(0.01, "idx"), (0.05, "mask_bits"), (0.25, "mask_bits"), (1.0, None)]
)
def test_state_scales_with_density(density, form):
    """The moments take 8 bytes per masked entry; the mask is kept as int32 indices (4 bytes per
    masked entry) below 1/32 density, else as packed bits (1/8 byte per entry): the state stays
    within (density + 5%) of AdamW's at every density, and within density + 1/64 + the counter."""
    n = 200_000
    p_sparse, p_dense = leaves(torch.randn(n), torch.randn(n))
    mask = random_mask((n,), density, 3) if density < 1 else torch.ones(n, dtype=torch.bool)
    k = int(mask.sum())
    opt = MaskedAdamW([p_sparse], {p_sparse: mask})
    assert mask_form(opt, p_sparse) == form
    mask_bytes = {"idx": 4 * k, "mask_bits": n // 8, None: 0}[form]
    assert mask_bytes == min(4 * k, n // 8) or form is None
    assert opt.state_bytes() == mask_bytes  # the mask is kept from the start, in its one form
    if form == "idx":
        assert opt.state[p_sparse]["idx"].dtype == torch.int32
        assert torch.equal(opt.state[p_sparse]["idx"], mask.nonzero().squeeze(1).int())
    elif form == "mask_bits":
        assert torch.equal(opt.state[p_sparse]["mask_bits"], packbits(mask))
    ref_opt = torch.optim.AdamW([p_dense])
    p_sparse.grad, p_dense.grad = torch.randn(n), torch.randn(n)
    opt.step()
    ref_opt.step()
    dense_bytes = sum(t.numel() * t.element_size() for t in ref_opt.state[p_dense].values())
    state = opt.state[p_sparse]
    for key in ("exp_avg", "exp_avg_sq"):
        assert state[key].dtype == torch.float32 and state[key].shape == (k,)
    assert opt.state_bytes() == mask_bytes + 8 * k + 4  # mask, two moments, fp32 step counter
    assert opt.state_bytes() <= (density + 0.05) * dense_bytes
    assert opt.state_bytes() <= (k / n + 1 / 64) * dense_bytes + 4
    if density == 0.01:
        assert opt.state_bytes() <= 0.06 * dense_bytes


@pytest.mark.parametrize("density", [0.0, 0.01, 0.05, 0.2, 0.9, 1.0])
@pytest.mark.parametrize("n", [1, 7, 8, 1001])
def test_packed_mask_round_trips_to_indices(n, density, monkeypatch):
    """The packed form is numpy.packbits(bitorder="little") of the flat mask (a non-contiguous mask
    too), and every way of unpacking it (numpy on CPU, below and above its 10% switch; torch
    nonzero_static, as on CUDA; torch nonzero) gives back the mask's indices."""
    mask = torch.rand(n, generator=torch.Generator().manual_seed(n)) < density
    strided = torch.stack([mask, ~mask], 1)[:, 0]  # not contiguous
    assert n == 1 or not strided.is_contiguous()
    want = mask.nonzero().squeeze(1)
    for m in (mask, strided):
        bits = masked_adamw._pack_mask(m)
        assert bits.dtype == torch.uint8 and torch.equal(bits, packbits(mask))
    k = want.numel()
    for count in (k, 0):  # 0: the count unknown (a saved mask being checked)
        got = masked_adamw._unpack_indices(bits, count, torch.int32)
        assert got.dtype == torch.int32 and torch.equal(got, want.int())
    got = masked_adamw._unpack_indices(bits, k, torch.int64, static=True)
    assert got.dtype == torch.int64 and torch.equal(got, want)

    def no_kernel(*args, **kwargs):
        raise NotImplementedError("no nonzero_static kernel")

    monkeypatch.setattr(torch, "nonzero_static", no_kernel)
    assert torch.equal(masked_adamw._unpack_indices(bits, k, torch.int64, static=True), want)


def test_all_false_mask_never_changes_and_holds_no_state():
    p, other = leaves(torch.randn(20, 10), torch.randn(10))
    before, other_before = p.detach().clone(), other.detach().clone()
    opt = MaskedAdamW([p, other], {p: torch.zeros(20, 10, dtype=torch.bool)}, **HYPER)
    for step in range(3):
        p.grad = torch.full((20, 10), float("nan"))
        other.grad = grads_for([other], step)[0]
        opt.step()
    assert torch.equal(p, before)
    assert p not in opt.state or not opt.state[p]
    assert opt.state_bytes() == 2 * 4 * 10 + 4  # only the dense 1-D parameter's state
    assert not torch.equal(other, other_before)


def _round_trip_setup() -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    torch.manual_seed(0)
    inits = [
        torch.randn(32, 24),
        torch.randn(24),
        torch.randn(16, 8).bfloat16(),
        torch.randn(64, 64),
    ]
    masks = [
        random_mask((32, 24), 0.1, 4),  # kept as packed bits
        None,
        random_mask((16, 8), 0.2, 5),  # packed bits, bf16 parameter
        random_mask((64, 64), 0.01, 6),  # kept as indices
    ]
    return inits, masks


def _trained(steps: int = 4) -> tuple[list[torch.nn.Parameter], MaskedAdamW, list]:
    inits, masks = _round_trip_setup()
    a = leaves(*inits)
    opt_a = MaskedAdamW(a, dict(zip(a, masks, strict=True)), **HYPER)
    assert [mask_form(opt_a, p) for p in a] == ["mask_bits", None, "mask_bits", "idx"]
    for step in range(steps):
        for p, g in zip(a, grads_for(a, step), strict=True):
            p.grad = g.to(p.dtype)
        opt_a.step()
    return a, opt_a, masks


def _continue_identically(a, opt_a, b, opt_b) -> None:
    for step in range(4, 8):
        for p, q, g in zip(a, b, grads_for(a, step), strict=True):
            p.grad, q.grad = g.to(p.dtype), g.to(q.dtype)
        opt_a.step()
        opt_b.step()
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)
        assert opt_a.state[p].keys() == opt_b.state[q].keys()
        for key, value in opt_a.state[p].items():
            assert value.dtype == opt_b.state[q][key].dtype, key
            assert torch.equal(value, opt_b.state[q][key]), key


def test_state_dict_round_trip_continues_identically():
    a, opt_a, masks = _trained()
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in a], "opt": opt_a.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    b = leaves(*saved["params"])
    opt_b = MaskedAdamW(b, dict(zip(b, masks, strict=True)), **HYPER)
    opt_b.load_state_dict(saved["opt"])
    # the base class would cast the fp32 moments of the bf16 parameter to bf16, and the masks of
    # float parameters (indices, packed bits) to float
    assert opt_b.state[b[2]]["exp_avg"].dtype == torch.float32
    assert opt_b.state[b[0]]["mask_bits"].dtype == torch.uint8
    assert opt_b.state[b[2]]["mask_bits"].dtype == torch.uint8
    assert opt_b.state[b[3]]["idx"].dtype == torch.int32
    _continue_identically(a, opt_a, b, opt_b)


def test_load_state_dict_takes_a_mask_saved_in_the_other_form():
    """A checkpoint whose masks are in the other form (e.g. written when every mask was kept as
    indices) loads; the form made from the masks given here is kept, and training continues
    identically."""
    a, opt_a, masks = _trained()
    sd = copy.deepcopy(opt_a.state_dict())  # loading aliases the tensors it can, as torch's does
    swapped = {}
    for i, s in sd["state"].items():
        s = dict(s)
        if "mask_bits" in s:
            s["idx"] = masks[i].reshape(-1).nonzero().squeeze(1).int()
            del s["mask_bits"]
        elif "idx" in s:
            s["mask_bits"] = packbits(masks[i])
            del s["idx"]
        swapped[i] = s
        assert s.keys() != opt_a.state[a[i]].keys() or masks[i] is None
    b = leaves(*(p.detach() for p in a))
    opt_b = MaskedAdamW(b, dict(zip(b, masks, strict=True)), **HYPER)
    opt_b.load_state_dict({**sd, "state": swapped})
    assert [mask_form(opt_b, p) for p in b] == ["mask_bits", None, "mask_bits", "idx"]
    _continue_identically(a, opt_a, b, opt_b)


def test_load_state_dict_rejects_a_different_mask():
    inits, masks = _round_trip_setup()
    a = leaves(*inits)
    opt_a = MaskedAdamW(a, dict(zip(a, masks, strict=True)))
    b = leaves(*inits)
    moved = masks[3].clone()  # the same count, one entry moved: index form
    moved.view(-1)[moved.view(-1).nonzero()[0]] = False
    moved.view(-1)[(~moved).view(-1).nonzero()[-1]] = True
    for other in (
        [random_mask((32, 24), 0.1, 99), None, masks[2], masks[3]],  # packed form
        [masks[0], None, masks[2], moved],
        [masks[0], None, masks[2], None],  # dense here, masked in the checkpoint
        [masks[0], random_mask((24,), 0.5, 7), masks[2], masks[3]],  # and the other way round
    ):
        opt_b = MaskedAdamW(b, dict(zip(b, other, strict=True)))
        before = opt_b.state_bytes()
        with pytest.raises(ValueError, match="saved mask differs"):
            opt_b.load_state_dict(opt_a.state_dict())
        assert opt_b.state_bytes() == before  # checked before anything is loaded
    opt_b = MaskedAdamW(b, dict(zip(b, masks, strict=True)))
    sd = opt_a.state_dict()
    bad = {**sd["state"], 0: {"mask_bits": sd["state"][0]["mask_bits"][:-1]}}  # truncated
    with pytest.raises(ValueError, match="saved mask differs"):
        opt_b.load_state_dict({**sd, "state": bad})
    c = leaves(*inits)
    opt_c = MaskedAdamW(c, {c[0]: torch.zeros(32, 24, dtype=torch.bool), c[2]: masks[2]})
    with pytest.raises(ValueError, match="frozen"):
        opt_c.load_state_dict(opt_a.state_dict())


def test_rejects_bad_arguments(monkeypatch):
    p, q = leaves(torch.randn(4, 3), torch.randn(3))
    with pytest.raises(ValueError, match="bool of shape"):
        MaskedAdamW([p], {p: torch.ones(3, 4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool of shape"):
        MaskedAdamW([p], {p: torch.ones(4, 3)})
    with pytest.raises(ValueError, match="not parameters"):
        MaskedAdamW([p], {q: torch.ones(3, dtype=torch.bool)})
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="use_triton=True"):
        MaskedAdamW([p], None, use_triton=True)


# The interpreter reads TRITON_INTERPRET when triton is imported, so the kernel runs in a child.
# Shapes cover several programs with a ragged tail (3000 dense entries, BLOCK = 1024), the
# masked gather/scatter with the mask kept as packed bits and as indices, a bf16 parameter, and NaN
# gradients at frozen entries.
TRITON_CHILD = r"""
import torch
from deltalab.train import masked_adamw
from deltalab.train.masked_adamw import MaskedAdamW

torch.manual_seed(0)
inits = [torch.randn(120, 100), torch.randn(3000), torch.randn(60, 50),
         torch.randn(40, 30).bfloat16(), torch.randn(100, 100)]
gen = torch.Generator().manual_seed(7)
masks = [torch.rand(120, 100, generator=gen) < 0.05, None, torch.ones(60, 50, dtype=torch.bool),
         torch.rand(40, 30, generator=gen) < 0.3, torch.rand(100, 100, generator=gen) < 0.01]
forms = ["mask_bits", None, None, "mask_bits", "idx"]  # how each mask is kept
hyper = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-3, weight_decay=0.1)

def forbidden(*args, **kwargs):
    raise AssertionError("use_triton=True fell back to the torch path")

def run(use_triton, steps):
    ps = [torch.nn.Parameter(x.clone()) for x in inits]
    opt = MaskedAdamW(ps, dict(zip(ps, masks)), use_triton=use_triton, **hyper)
    for p, form in zip(ps, forms):
        assert [k for k in ("idx", "mask_bits") if k in opt.state[p]] == ([form] if form else [])
    torch_path = masked_adamw._adamw_torch
    if use_triton:
        masked_adamw._adamw_torch = forbidden
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        for p, m in zip(ps, masks):
            p.grad = (1e-2 * torch.randn(p.shape, generator=g)).to(p.dtype)
            if m is not None:
                p.grad[~m] = float("nan")
        opt.step()
    masked_adamw._adamw_torch = torch_path
    return [p.detach() for p in ps], [opt.state[p] for p in ps]

for steps in (1, 5):
    ref, ref_state = run(False, steps)
    out, state = run(True, steps)
    for x, m, p, q, s, r in zip(inits, masks, out, ref, state, ref_state):
        if m is not None and not m.all():
            assert torch.equal(p[~m], x[~m]), "frozen entries changed"
        assert not torch.equal(p, x)
        for key in ("exp_avg", "exp_avg_sq"):  # moments depend on the gradients only
            torch.testing.assert_close(s[key], r[key], rtol=1e-5, atol=1e-9)
        if p.dtype == torch.float32:
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        elif steps == 1:
            # the interpreter truncates fp32 -> bf16 stores (GPUs round to nearest even, as
            # torch does): one step is within one bf16 ulp; over steps the two drift apart
            torch.testing.assert_close(p.float(), q.float(), rtol=2**-7, atol=0)
print("OK")
"""


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install triton)")
def test_triton_kernel_interpreted_matches_torch_path():
    env = os.environ | {"TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", TRITON_CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


@pytest.mark.cuda
def test_cuda_triton_matches_torch_path_and_is_faster():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    torch.manual_seed(0)
    x = torch.randn(4096, 4096, device="cuda")
    mask = torch.rand(4096, 4096, device="cuda") < 0.05
    runs = {}
    for use_triton in (False, True):
        p = torch.nn.Parameter(x.clone())
        opt = MaskedAdamW([p], {p: mask}, use_triton=use_triton, **HYPER)
        g = torch.Generator(device="cuda").manual_seed(1)
        p.grad = 1e-2 * torch.randn(p.shape, device="cuda", generator=g)
        p.grad[~mask] = float("nan")
        for _ in range(3):
            opt.step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(20):
            opt.step()
        torch.cuda.synchronize()
        runs[use_triton] = (p, opt, (time.perf_counter() - start) / 20)
    (p_torch, opt_torch, t_torch), (p_triton, opt_triton, t_triton) = runs[False], runs[True]
    assert torch.equal(p_triton.detach()[~mask], x[~mask])
    torch.testing.assert_close(p_triton.detach(), p_torch.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        opt_triton.state[p_triton]["exp_avg_sq"], opt_torch.state[p_torch]["exp_avg_sq"]
    )
    assert t_triton < t_torch, f"triton {t_triton * 1e3:.3f} ms vs torch {t_torch * 1e3:.3f} ms"
