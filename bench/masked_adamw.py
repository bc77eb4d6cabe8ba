"""Masked AdamW for sparse DPO: step time and optimizer-state memory against torch's AdamW.

On a Llama-shaped set of random fp32 parameters with random gradients, at each mask density
(random per-entry masks, the same for every tensor), times a step (mean of --steps after one warm-up
step) and sums the bytes held in optimizer state for:
- masked: `MaskedAdamW` (torch path): two fp32 moments per masked entry, plus each tensor's mask
  as int32 indices (4 bytes per masked entry) or packed bits (1/8 byte per entry), the smaller;
- adamw-dense: `torch.optim.AdamW` on every entry (the same at every density: run once);
- adamw-fused: the same with `fused=True`, torch's fastest AdamW (the ratios' fair baseline);
- adamw-maskgrad: `torch.optim.AdamW` on `grad * mask` (the masking, into reused buffers, is
  timed with the step); its state is dense, and weight decay still moves the frozen entries.
With a GPU and triton, the fused Triton kernel is then timed against the torch path on CUDA.

    nice -n 10 python bench/masked_adamw.py                      # 0.25B parameters
    nice -n 10 python bench/masked_adamw.py --size small         # ~20M, a quick run

Targets: state memory <= (density + 5%) x dense AdamW's at every density; at 5% density a step
<= 0.5x dense AdamW's time on CPU. The mask costs min(4 bytes per masked entry, 1/8 byte per entry)
against the moments' 8 per masked entry, so the state is <= density + min(density/2, 1/64) of
AdamW's. Above 1/32 density the mask is packed bits and the indices are rebuilt at every step
(timed with the step).
"""

from __future__ import annotations

import argparse
import gc
import math
import time

import torch

from deltalab.train.masked_adamw import MaskedAdamW, triton_available

SHAPES = {
    # hidden, layers, intermediate, heads, kv heads, vocab (embeddings untied)
    "small": (512, 4, 1408, 8, 2, 8000),  # ~20M
    "0.25B": (1024, 16, 2816, 16, 4, 32000),
}


def llama_shapes(size: str) -> list[tuple[int, ...]]:
    hidden, layers, inter, heads, kv, vocab = SHAPES[size]
    kv_dim = hidden // heads * kv
    shapes = [(vocab, hidden)]
    for _ in range(layers):
        shapes += [(hidden, hidden), (kv_dim, hidden), (kv_dim, hidden), (hidden, hidden)]
        shapes += [(inter, hidden), (inter, hidden), (hidden, inter), (hidden,), (hidden,)]
    return [*shapes, (hidden,), (vocab, hidden)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, steps: int, device: torch.device) -> float:
    """Mean seconds of `step()` over `steps` calls after one warm-up call (state allocation)."""
    step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(
        t.numel() * t.element_size()
        for s in opt.state.values()
        for t in s.values()
        if isinstance(t, torch.Tensor)
    )


def make_masks(params: list[torch.Tensor], density: float, seed: int) -> list[torch.Tensor]:
    g = torch.Generator(device=params[0].device).manual_seed(seed)
    return [torch.rand(p.shape, generator=g, device=p.device) < density for p in params]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="0.25B", choices=list(SHAPES))
    parser.add_argument("--densities", default="0.01,0.05,0.25,1.0")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    densities = [float(d) for d in args.densities.split(",")]
    hyper = dict(lr=args.lr, weight_decay=args.weight_decay)

    shapes = llama_shapes(args.size)
    n = sum(math.prod(s) for s in shapes)
    print(
        f"# masked AdamW, Llama-shaped fp32 parameters size={args.size} ({n / 1e6:.1f}M), "
        f"threads {args.threads}, torch {torch.__version__}; time = mean of {args.steps} steps "
        f"after a warm-up, state = bytes of the optimizer's state tensors",
        flush=True,
    )
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    cpu = torch.device("cpu")

    opt = torch.optim.AdamW(params, **hyper)
    dense_t = time_steps(opt.step, args.steps, cpu)
    dense_b = state_bytes(opt)
    del opt
    gc.collect()

    def report(method: str, density: float | None, t: float, nbytes: int) -> None:
        d = "    -" if density is None else f"{density:5.0%}"
        print(
            f"madamw size={args.size} {method:<14} density {d}  step {t * 1e3:8.1f} ms  "
            f"state {nbytes / 2**20:8.1f} MiB  vs dense AdamW: {t / dense_t:5.3f}x time "
            f"{nbytes / dense_b:6.4f}x state",
            flush=True,
        )

    report("adamw-dense", None, dense_t, dense_b)
    fused = torch.optim.AdamW(params, fused=True, **hyper)
    fused_t = time_steps(fused.step, args.steps, cpu)
    report("adamw-fused", None, fused_t, state_bytes(fused))
    del fused
    gc.collect()

    results = {}
    for density in densities:
        masks = make_masks(params, density, seed=1)
        opt = MaskedAdamW(params, dict(zip(params, masks, strict=True)), use_triton=False, **hyper)
        t = time_steps(opt.step, args.steps, cpu)
        results[density] = (t, opt.state_bytes())
        report("masked", density, *results[density])
        del opt
        gc.collect()

        ref = torch.optim.AdamW(params, **hyper)
        grads = [p.grad for p in params]
        masked = [torch.empty_like(g) for g in grads]  # reused: no allocation in the step

        def maskgrad_step(ref=ref, grads=grads, masks=masks, masked=masked) -> None:
            for p, g, m, out in zip(params, grads, masks, masked, strict=True):
                p.grad = torch.mul(g, m, out=out)
            ref.step()

        t = time_steps(maskgrad_step, args.steps, cpu)
        report("adamw-maskgrad", density, t, state_bytes(ref))
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        del ref, masks, masked
        gc.collect()

    parts = []
    for density, (_, nbytes) in results.items():
        limit = density + 0.05
        ok = nbytes <= limit * dense_b
        parts.append(
            f"state at {density:.0%} {nbytes / dense_b:.3f}x (<= {limit:.2f}: "
            f"{'met' if ok else 'MISSED'})"
        )
    if 0.05 in results:
        r = results[0.05][0] / dense_t
        parts.append(f"step at 5% {r:.3f}x dense (<= 0.5: {'met' if r <= 0.5 else 'MISSED'})")
        parts.append(f"{results[0.05][0] / fused_t:.3f}x fused AdamW")
    print(f"madamw size={args.size} summary: " + ", ".join(parts), flush=True)

    if not (torch.cuda.is_available() and triton_available()):
        why = "no CUDA device" if not torch.cuda.is_available() else "triton not importable"
        print(f"# {why}: Triton kernel vs torch path on CUDA skipped", flush=True)
        return
    cuda = torch.device("cuda")
    for p in params:
        p.data, p.grad = p.data.to(cuda), p.grad.to(cuda)
    fused = torch.optim.AdamW(params, fused=True, **hyper)
    fused_t = time_steps(fused.step, max(args.steps, 10), cuda)
    del fused
    print(f"madamw size={args.size} cuda adamw-fused dense {fused_t * 1e3:8.2f} ms", flush=True)
    for density in densities:
        masks = make_masks(params, density, seed=1)
        times = {}
        for use_triton in (False, True):
            opt = MaskedAdamW(
                params, dict(zip(params, masks, strict=True)), use_triton=use_triton, **hyper
            )
            times[use_triton] = time_steps(opt.step, max(args.steps, 10), cuda)
            del opt
        print(
            f"madamw size={args.size} cuda density {density:5.0%}  torch path "
            f"{times[False] * 1e3:8.2f} ms  triton {times[True] * 1e3:8.2f} ms  "
            f"{times[False] / times[True]:5.1f}x faster; triton vs fused AdamW "
            f"{times[True] / fused_t:5.3f}x"
            + (
                f" (target <= 0.3 at 5%: {'met' if times[True] <= 0.3 * fused_t else 'MISSED'})"
                if density == 0.05
                else ""
            ),
            flush=True,
        )
        del masks
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
