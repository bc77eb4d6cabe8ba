"""A full-page screenshot of the study's HTML report, for people who read it without a checkout.

    python tools/screenshot_report.py                 # reports/index.html -> reports/index.png
    dvc add reports/index.png && git add reports/index.png.dvc

Renders the page in Debian's headless Chromium (`apt install chromium`; not a Python dependency,
so this is a tool, not a stage) in a tall window and crops the blank space below the page.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH, TALL = 1280, 12000  # the report is one column; a tall window holds all of it


def screenshot(page: Path, out: Path, chromium: str) -> tuple[int, int]:
    """Write `out` (PNG) from the HTML `page`; returns its size."""
    from PIL import Image, ImageChops

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.png"
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--no-first-run", "--disable-background-networking", "--disable-sync",
                 f"--user-data-dir={Path(tmp) / 'profile'}", f"--window-size={WIDTH},{TALL}",
                 "--virtual-time-budget=10000"]  # fmt: skip
        subprocess.run([chromium, *flags, f"--screenshot={raw}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=180)  # fmt: skip
        image = Image.open(raw).convert("RGB")
        background = Image.new("RGB", image.size, image.getpixel((WIDTH - 1, TALL - 1)))
        box = ImageChops.difference(image, background).getbbox()
        bottom = min(TALL, (box[3] if box else TALL) + 24)
        tmp_out = out.with_suffix(".tmp.png")
        image.crop((0, 0, WIDTH, bottom)).save(tmp_out, optimize=True)
        tmp_out.replace(out)
        return WIDTH, bottom


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", type=Path, default=ROOT / "reports/index.html")
    parser.add_argument("--out", type=Path, default=ROOT / "reports/index.png")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("error: Chromium is not installed (Debian: apt install chromium)", file=sys.stderr)
        return 2
    if not args.page.is_file():
        print(f"error: {args.page}: not found (run `dvc repro report`)", file=sys.stderr)
        return 2
    width, height = screenshot(args.page, args.out, chromium)
    print(f"wrote {args.out} ({width}x{height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
