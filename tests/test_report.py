"""The study report: numbers only from metrics (every row's source resolves), verdicts by the
seed rule, byte-identical reruns, profiles that skip workflows, and the HTML page in headless
Chromium (loads, every figure has a size, no broken link)."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import threading
from functools import partial
from pathlib import Path

import pytest

from deltalab.deltas.claims import CLAIM_BY_KEY
from deltalab.report import study as report
from tests.servers import missing
from tests.tiny import ROOT, tiny_params

SOURCE = re.compile(r"`(metrics/[^`]+\.json)` › `([^`]+)`")
MEMBERS = ("baseline-0", "baseline-1")  # the committed run's delta track
FIGURES = [
    "reports/evaluation/accuracy.png",
    *[f"reports/behavior/{m}/passk.png" for m in MEMBERS],
    *[f"reports/deltas/{m}/methods.png" for m in MEMBERS],
    *[f"reports/search/{m}/search.png" for m in MEMBERS],
    *[f"reports/masks/{m}/jaccard_layers.png" for m in MEMBERS],
]


def _png(path: Path, color: str) -> None:
    from deltalab.report.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar([0, 1], [1, 2], color=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)


@pytest.fixture
def study_root(tmp_path) -> Path:
    """The committed tiny run's metrics, with the figures the stages would have drawn."""
    shutil.copytree(ROOT / "metrics", tmp_path / "metrics")
    for i, figure in enumerate(FIGURES):
        _png(tmp_path / figure, f"C{i}")
    return tmp_path


def _resolve(root: Path, file: str, key: str):
    node = json.loads((root / file).read_text())
    for part in key.split("."):
        if part not in node:  # keys may hold dots (model names do not): join the rest
            return node.get(key[key.index(part) :])
        node = node[part]
    return node


def test_every_row_names_a_file_and_key_that_hold_its_numbers(study_root):
    page = report.build(tiny_params(), study_root, CLAIM_BY_KEY)
    text = report.markdown(page)
    sources = SOURCE.findall(text)
    assert len(sources) > 40
    for file, key in sources:
        assert _resolve(study_root, file, key) is not None, (file, key)
    # a number in a row is the number at its source
    row = next(
        line for line in text.splitlines() if "post_training.baseline.rlvr_vs_sft_tulu" in line
    )
    entry = _resolve(
        study_root, "metrics/compare.json", "post_training.baseline.rlvr_vs_sft_tulu.gsm8k"
    )
    assert f"{entry['difference']:+.3f}" in row
    assert [str(p) for p in page.figures] == FIGURES
    for section in ("Domain tokens", "Post-training", "pass@k", "published numbers",
                    "merge search", "masks"):  # fmt: skip
        assert section in text


def test_verdicts_follow_the_seed_interval():
    assert report.verdict({"seeds_ci_low": 0.01, "seeds_ci_high": 0.2}, 3).startswith("**finding**")
    assert "lower" in report.verdict({"seeds_ci_low": -0.3, "seeds_ci_high": -0.01}, 3)
    assert report.verdict({"seeds_ci_low": -0.1, "seeds_ci_high": 0.2}, 3) == (
        "not established (3 seeds)"
    )
    one = report.verdict({"questions_ci_low": 0.1, "questions_ci_high": 0.3}, 1)
    assert one.startswith("one seed: not a finding")
    assert report.verdict({"seeds_ci_low": 0.0, "seeds_ci_high": 0.2}, 2).startswith("not")
    same = {"seeds_ci_low": -0.054, "seeds_ci_high": -0.054, "seeds_sd": 0.0}
    assert report.verdict(same, 2).startswith("not established (2 seeds, identical differences")
    assert report.verdict(same | {"seeds_sd": 2.8e-17}, 2) == report.verdict(same, 2)
    assert report.verdict(same | {"seeds_sd": 1e-6}, 2).startswith("**finding**")


def test_the_committed_runs_verdicts(study_root):
    """The three-seed comparison: the times-table gap after sft_tulu is the finding."""
    text = report.markdown(report.build(tiny_params(), study_root, CLAIM_BY_KEY))
    lines = [line for line in text.splitlines() if line.startswith("| sft_tulu | times table")]
    assert len(lines) == 1 and "**finding** (lower)" in lines[0]
    gsm8k = next(line for line in text.splitlines() if line.startswith("| sft_gsm8k | GSM8K"))
    assert "not established (3 seeds)" in gsm8k


def test_reruns_are_byte_identical_and_headline_is_small(study_root):
    first = report.build(tiny_params(), study_root, CLAIM_BY_KEY)
    again = report.build(tiny_params(), study_root, CLAIM_BY_KEY)
    assert report.markdown(first) == report.markdown(again)
    assert report.html(first) == report.html(again)
    numbers = report.headline(first)
    assert 8 <= len(numbers) <= 20
    assert numbers["gsm8k/sft_gsm8k/difference"] == pytest.approx(-0.02, abs=1e-4)


def _rows(text: str, *needles: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("|") and all(n in ln for n in needles)]


def test_two_delta_seeds_give_every_track_comparison_a_seed_interval(study_root):
    """The merge against the models it merges and the masked runs' reward accuracy against their
    rivals are judged over the delta-track seeds; the claims are judged in each seed."""
    text = report.markdown(report.build(tiny_params(), study_root, CLAIM_BY_KEY))
    compare = json.loads((study_root / "metrics/compare.json").read_text())["post_training"]
    for name, metric in [("merged_vs_rlvr", "gsm8k"), ("merged_vs_sft_gsm8k", "gsm8k"),
                         ("masked_dpo_vs_dpo", "reward_accuracy"),
                         ("masked_dpo_vs_masked_dpo_random", "reward_accuracy")]:  # fmt: skip
        entry = compare["baseline"][name][metric]
        rows = _rows(text, f"`post_training.baseline.{name}.{metric}`")  # merged: twice
        n_seeds = entry.get("n_seeds", compare["baseline"][name].get("n_seeds"))
        assert rows and n_seeds == 2
        for row in rows:
            assert report.ci(entry["seeds_ci_low"], entry["seeds_ci_high"]) in row
            assert report.verdict(entry, 2) in row
    references = json.loads((study_root / "metrics/compare.json").read_text())["merge_references"]
    best = references["baseline"]["best_single"]
    for name in ("dense_1_1", "sparse_1_1", "ties_1_1", "dare_ties_1_1", "ram_1_1"):
        entry = references["baseline"][f"{name}_vs_{best}"]
        (row,) = _rows(text, f"`merge_references.baseline.{name}_vs_{best}`")
        assert report.ci(entry["seeds_ci_low"], entry["seeds_ci_high"]) in row
        assert report.verdict(entry, 2) in row
    header = next(ln for ln in text.splitlines() if ln.startswith("| claim |"))
    assert "| baseline-0 | baseline-1 | verdict |" in header
    claims = _rows(text, "`metrics/deltas/baseline-1.json`")
    assert claims and all("seeds |" in row for row in claims)
    numbers = report.headline(report.build(tiny_params(), study_root, CLAIM_BY_KEY))
    assert "merge/baseline/accuracy" in numbers and not any("baseline-0" in k for k in numbers)
    reward = compare["baseline"]["masked_dpo_vs_dpo"]["reward_accuracy"]
    assert numbers["masked_dpo/baseline/masked_dpo/reward_accuracy"] == pytest.approx(
        reward["masked_dpo_accuracy"], abs=1e-4
    )


def test_claims_that_differ_between_seeds_say_so(study_root):
    deltas = study_root / "metrics/deltas/baseline-1.json"
    block = json.loads(deltas.read_text())
    key, subjects = next(iter(block["claims"].items()))
    subject = next(iter(subjects))
    first = json.loads((study_root / "metrics/deltas/baseline-0.json").read_text())
    verdict = first["claims"][key][subject]["verdict"]
    flipped = 0.0 if verdict == 1.0 else 1.0
    block["claims"][key][subject]["verdict"] = flipped
    deltas.write_text(json.dumps(block))
    text = report.markdown(report.build(tiny_params(), study_root, CLAIM_BY_KEY))
    (row,) = _rows(text, f"`metrics/deltas/baseline-1.json` › `claims.{key}.{subject}`")
    words = report.VERDICT_WORDS[verdict], report.VERDICT_WORDS[flipped]
    assert f"| {words[0]} in 1, {words[1]} in 1 of 2 seeds |" in row


def test_the_readme_sections_keep_the_seed_level_tables_and_drop_per_seed_detail(study_root):
    params = tiny_params()
    masks = report.section(params, study_root, CLAIM_BY_KEY, "masks")
    assert "| masks | baseline-0 | baseline-1 | random | source |" in masks  # side by side
    assert "masked_dpo_vs_dpo.reward_accuracy" in masks
    assert "| run | mask |" not in masks and "Frozen entries changed" in masks
    merge = report.section(params, study_root, CLAIM_BY_KEY, "merge")
    assert "merge_references.baseline." in merge and "| model | accuracy |" not in merge
    for member in MEMBERS:
        acc = json.loads((study_root / f"metrics/merge/{member}.json").read_text())["accuracy"]
        assert f"{member}: merged {acc['merged']:.3g}" in merge
    full = report.markdown(report.build(params, study_root, CLAIM_BY_KEY))
    assert full.count("| model | accuracy |") == len(MEMBERS)  # the report keeps every seed's


def test_one_delta_seed_keeps_per_member_headline_and_says_one_seed(study_root):
    params = tiny_params({"delta_track": {"conditions": ["baseline"], "seeds": [0]}})
    (study_root / "metrics/compare.json").unlink()  # a study without the compare stage's output
    page = report.build(params, study_root, CLAIM_BY_KEY)
    numbers = report.headline(page)
    assert "merge/baseline-0/accuracy" in numbers
    assert "masked_dpo/baseline-0/masked_dpo/reward_accuracy" in numbers
    text = report.markdown(page)
    assert "baseline-0 (one training run per delta" in text and "baseline-1" not in text


def test_a_profile_without_workflows_gets_only_its_sections(tmp_path):
    """The Tulu 3 profile analyses imported checkpoints: no conditions, no merge, no masks."""
    from deltalab.config import load_params

    params = load_params(ROOT / "configs/tulu3-8b.yaml")
    (tmp_path / "metrics/deltas").mkdir(parents=True)
    shutil.copy(ROOT / "metrics/deltas/baseline-0.json", tmp_path / "metrics/deltas/tulu3-0.json")
    text = report.markdown(report.build(params, tmp_path, CLAIM_BY_KEY))
    assert "published numbers" in text and "`metrics/deltas/tulu3-0.json`" in text
    assert "imported" in text  # the run section says where the checkpoints came from
    assert "Domain tokens" not in text and "merge search" not in text and "masks" not in text


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        missing("Debian's chromium is not installed")
    return found


CHECK = """<!DOCTYPE html><html><body><iframe id="f" src="index.html" width="1200" height="900">
</iframe><script>
document.getElementById("f").onload = async () => {
  const doc = document.getElementById("f").contentDocument;
  const images = [...doc.images].map(i => [i.getAttribute("alt"), i.naturalWidth, i.naturalHeight]);
  const links = [...doc.querySelectorAll("a[href]")].map(a => a.getAttribute("href"));
  const broken = [];
  for (const href of links) {
    if (href.startsWith("#")) {
      if (!doc.getElementById(href.slice(1))) broken.push(href);
      continue;
    }
    const r = await fetch(href, {method: "HEAD"}).catch(() => ({ok: false}));
    if (!r.ok) broken.push(href);
  }
  const out = document.createElement("pre"); out.id = "result";
  out.textContent = JSON.stringify({title: doc.title, images, links, broken,
                                    tables: doc.querySelectorAll("table").length});
  document.body.appendChild(out);
};
</script></body></html>"""


def test_the_html_page_in_headless_chromium(study_root, tmp_path):
    chromium = _chromium()
    page = report.build(tiny_params(), study_root, CLAIM_BY_KEY)
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(report.html(page))
    (site / "check.html").write_text(CHECK)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        dom = subprocess.run(
            [chromium, *flags, "--virtual-time-budget=15000", "--dump-dom", f"{base}/check.html"],
            capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip
        shot = tmp_path / "page.png"
        subprocess.run(
            [chromium, *flags, "--window-size=1280,3000", f"--screenshot={shot}",
             f"{base}/index.html"], capture_output=True, timeout=120,
        )  # fmt: skip
    finally:
        server.shutdown()
    found = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert result["title"] == "deltalab study report"
    assert len(result["images"]) == len(FIGURES)
    assert all(w > 0 and h > 0 for _, w, h in result["images"]), result["images"]
    assert result["broken"] == [] and result["tables"] >= 6
    assert shot.is_file() and shot.stat().st_size > 10_000
