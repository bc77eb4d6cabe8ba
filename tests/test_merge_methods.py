"""Merge methods against direct implementations of their papers' definitions on small tensors,
and the seeded drops: the same on every device, the right rates, exact rescaling."""

from __future__ import annotations

import math
import re

import pytest
import torch

from deltalab.merging.methods import METHODS, MethodParams, check, merge_delta
from deltalab.merging.methods.randomness import uniforms, uniforms_reference

SCALES = [0.8, 1.3, 0.5]


def _taus(n: int = 200, m: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    taus = torch.randn(m, n, generator=g)
    taus[1, :40] = 0.0  # an RL-like vector: many entries unchanged
    taus[:, 5] = 0.0  # an entry nobody moves
    return taus


def _topk_naive(t: list[float], k: int) -> set[int]:
    """Indices of the k largest |t|, ties to the lowest index (sorted by (-|x|, index))."""
    return set(sorted(range(len(t)), key=lambda j: (-abs(t[j]), j))[:k])


def _ties_naive(taus, scales, density, normalize):
    m, n = taus.shape
    k = max(1, round(density * n))
    kept = [_topk_naive(taus[i].tolist(), k) if density < 1 else set(range(n)) for i in range(m)]
    out = []
    for j in range(n):
        vals = [scales[i] * float(taus[i, j]) if j in kept[i] else 0.0 for i in range(m)]
        sign = 1.0 if sum(vals) >= 0 else -1.0
        agree = [i for i in range(m) if vals[i] != 0 and math.copysign(1, vals[i]) == sign]
        total = sum(vals[i] for i in agree)
        weight = sum(scales[i] for i in agree)
        out.append(total / weight if normalize and weight else total)
    return torch.tensor(out)


def test_task_arithmetic_is_the_scaled_sum():
    taus = _taus()
    expected = sum(s * taus[i] for i, s in enumerate(SCALES))
    torch.testing.assert_close(merge_delta("task_arithmetic", taus, SCALES, MethodParams()),
                               expected, rtol=1e-6, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("density", [1.0, 0.3, 0.05])
@pytest.mark.parametrize("normalize", [True, False])
def test_ties_trims_elects_and_averages_as_defined(density, normalize):
    taus = _taus()
    got = merge_delta("ties", taus, SCALES, MethodParams(density=density, normalize=normalize))
    torch.testing.assert_close(got, _ties_naive(taus, SCALES, density, normalize),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_uniforms_are_the_same_numbers_as_integer_arithmetic_and_slice_consistently():
    u = uniforms(7, "layer/1", 50_000)
    picks = [0, 1, 17, 4096, 49_999]
    assert [float(u[i]) for i in picks] == uniforms_reference(7, "layer/1", picks)
    assert torch.equal(uniforms(7, "layer/1", 100, start=1000), u[1000:1100])
    assert not torch.equal(uniforms(7, "layer/2", 100), u[:100])
    assert not torch.equal(uniforms(8, "layer/1", 100), u[:100])
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_uniforms_are_device_independent():
    assert torch.equal(uniforms(3, "k", 10_000, device="cuda").cpu(), uniforms(3, "k", 10_000))


def test_dare_drops_at_the_rate_and_rescales_exactly():
    taus = torch.randn(2, 100_000, generator=torch.Generator().manual_seed(1))
    params = MethodParams(density=0.3, seed=5)
    got = merge_delta("dare_linear", taus, [1.0, 0.0], params, key="t")
    kept = got != 0
    rate = float(kept.float().mean())
    assert abs(rate - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 1e5)
    torch.testing.assert_close(got[kept], taus[0][kept] / 0.3)  # rescale 1 / density
    again = merge_delta("dare_linear", taus, [1.0, 0.0], params, key="t")
    assert torch.equal(got, again)
    other = merge_delta("dare_linear", taus, [1.0, 0.0], MethodParams(density=0.3, seed=6), "t")
    assert not torch.equal(got, other)
    # each vector draws its own mask
    both = merge_delta("dare_linear", taus[[0, 0]], [1.0, 1.0], params, key="t")
    assert not torch.equal(both, 2 * got)


def test_dare_ties_is_ties_consensus_over_dropped_vectors():
    taus = _taus(n=5000)
    params = MethodParams(density=0.5, normalize=False, seed=2)
    draw = lambda i, n: uniforms(2, f"w/{i}", n)  # noqa: E731
    dropped = torch.stack([taus[i] * (draw(i, taus.shape[1]) < 0.5) / 0.5 for i in range(3)])
    expected = _ties_naive(dropped, SCALES, 1.0, False)
    got = merge_delta("dare_ties", taus, SCALES, params, key="w")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_della_keeps_by_magnitude_rank_and_rescales_by_each_probability():
    n = 200_000
    tau = torch.randn(1, n, generator=torch.Generator().manual_seed(3))
    params = MethodParams(density=0.4, epsilon=0.2, seed=1)
    got = merge_delta("della_linear", tau, [1.0], params, key="d")[None]
    order = tau.abs().argsort(descending=True)[0]
    top, bottom = order[: n // 10], order[-n // 10 :]
    keep_top = float((got[0, top] != 0).float().mean())
    keep_bottom = float((got[0, bottom] != 0).float().mean())
    # p runs from 0.6 (largest) to 0.2 (smallest): 0.58 and 0.22 on average in the deciles
    assert abs(keep_top - 0.58) < 0.01 and abs(keep_bottom - 0.22) < 0.01
    assert abs(float((got != 0).float().mean()) - 0.4) < 0.005
    # a kept entry is τ / p: recover p from the rank and check exactly
    ranks = torch.empty(n, dtype=torch.long)
    ranks[order] = torch.arange(n)
    p = 0.2 + (1 - ranks.float() / (n - 1)) * 0.4
    kept = got[0] != 0
    torch.testing.assert_close(got[0, kept], tau[0, kept] / p[kept], rtol=2e-5, atol=1e-6)


def test_breadcrumbs_keeps_exactly_the_band_below_the_outliers():
    n = 1000
    tau = torch.randn(1, n, generator=torch.Generator().manual_seed(4))
    got = merge_delta("breadcrumbs", tau, [1.0], MethodParams(density=0.2, gamma=0.05))
    order = sorted(range(n), key=lambda j: (-abs(float(tau[0, j])), j))
    assert set(torch.nonzero(got).flatten().tolist()) == set(order[50:250])
    torch.testing.assert_close(got[got != 0], tau[0][got != 0])
    # a tensor smaller than 1 / gamma: nothing to drop at the top, its top entries stay
    small = torch.randn(1, 50, generator=torch.Generator().manual_seed(5))
    kept = merge_delta("breadcrumbs", small, [1.0], MethodParams(density=0.2, gamma=0.01))
    assert set(torch.nonzero(kept).flatten().tolist()) == _topk_naive(small[0].tolist(), 10)


def test_ram_keeps_single_updates_whole_and_averages_shared_ones():
    taus = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 4.0, 0.0]])
    got = merge_delta("ram", taus, [1.0, 0.5], MethodParams(epsilon=1e-5))
    torch.testing.assert_close(got, torch.tensor([1.0, 1.5, (2.0 + 2.0) / 2, 0.0]))


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("tie", MethodParams(), "unknown merge method 'tie'"),
        ("ties", MethodParams(density=0.0), "ties: density must be in (0, 1]"),
        ("breadcrumbs", MethodParams(density=0.995, gamma=0.01), "gamma + density must be <= 1"),
        ("della", MethodParams(density=0.1, epsilon=0.15), "density ± epsilon"),
        ("ram", MethodParams(epsilon=-1.0), "ram: epsilon must be >= 0"),
    ],
)
def test_parameters_that_cannot_work_are_refused_by_name(name, params, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check(name, params)


def test_every_method_is_registered_with_its_parameters():
    assert set(METHODS) == {"task_arithmetic", "ties", "dare_linear", "dare_ties", "della",
                            "della_linear", "breadcrumbs", "breadcrumbs_ties", "ram"}  # fmt: skip
    assert all(METHODS[m].random for m in ("dare_linear", "dare_ties", "della", "della_linear"))
    for name in METHODS:
        check(name, MethodParams(density=0.3, gamma=0.01, epsilon=0.1))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from tests.search_fixtures import build_search_workspace

    return build_search_workspace(tmp_path_factory.mktemp("methods"))


PARAMS = MethodParams(density=0.4, gamma=0.02, epsilon=0.1, seed=3)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_live_trial_holds_the_written_merge_bit_for_bit(workspace, method):
    """Every method: the checkpoint writer and the in-memory merge give the same bits, and 100
    trials later the same scales give them again (no drift)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from deltalab.merging.disk import merge
    from deltalab.merging.live import LiveMerge
    from deltalab.merging.vectors import TaskVector
    from deltalab.tensors.reader import Checkpoint

    base = Checkpoint(workspace / "base")
    vectors = [TaskVector(workspace / f"{v}.safetensors") for v in ("sft", "rlvr")]
    scales = [1.2, 0.7]
    out = workspace / f"merged-{method}"
    info = merge(base, list(zip(vectors, scales, strict=True)), out, progress=False,
                 method=method, method_params=PARAMS)  # fmt: skip
    assert info.get("method", {"name": "task_arithmetic"})["name"] == method
    written = load_file(next(out.glob("*.safetensors")))
    model = AutoModelForCausalLM.from_pretrained(workspace / "base")
    live = LiveMerge(model, base, vectors, method=method, method_params=PARAMS)
    live.apply(scales)
    state = model.state_dict()
    for name in live.slots:
        assert torch.equal(state[name], written[name]), name
    first = {n: state[n].clone() for n in live.slots}
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        live.apply((torch.rand(2, generator=g) * 1.5 + 0.5).tolist())
    live.apply(scales)
    assert all(torch.equal(model.state_dict()[n], first[n]) for n in live.slots)


def test_a_bad_method_or_parameter_stops_the_merge_before_writing(workspace, tmp_path):
    from deltalab.errors import ConfigError
    from deltalab.merging.disk import merge
    from deltalab.merging.vectors import TaskVector
    from deltalab.tensors.reader import Checkpoint

    base = Checkpoint(workspace / "base")
    pairs = [(TaskVector(workspace / "sft.safetensors"), 1.0)]
    with pytest.raises(ConfigError, match="merge method: ties: density must be in"):
        merge(base, pairs, tmp_path / "out", progress=False, method="ties",
              method_params=MethodParams(density=1.5))  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_the_merge_command_takes_any_method(workspace, tmp_path, capsys):
    from safetensors.torch import load_file

    from deltalab.cli import main

    vectors = ["--vector", str(workspace / "sft.safetensors:1.0"),
               "--vector", str(workspace / "rlvr.safetensors:0.5")]  # fmt: skip
    out = tmp_path / "ties"
    assert main(["merge", "--base", str(workspace / "base"), *vectors, "--out", str(out),
                 "--method", "ties", "--density", "0.3", "--quiet"]) == 0  # fmt: skip
    assert "ties: base + sft.safetensors×1" in capsys.readouterr().out
    assert load_file(next(out.glob("*.safetensors")))
    bad = main(["merge", "--base", str(workspace / "base"), *vectors, "--out",
                str(tmp_path / "bad"), "--method", "della", "--density", "0.1"])  # fmt: skip
    assert bad == 2 and "density ± epsilon" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
