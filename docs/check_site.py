"""Look at the built site in a real browser (headless Chromium): screenshots and horizontal overflow.

Usage::

    python docs/check_site.py docs/_build/html [--shots DIR] [--width 1280]

Prints one line per page whose main column (``article.bd-article``) or whole
page is wider than the window, i.e. content cut off or a horizontal scroll bar,
and exits 1 if there is any. ``--shots DIR`` also writes screenshots of the
index, the gallery, the MXNet and performance pages and one API page. Needs Chromium (Debian:
``apt-get install chromium``); the pages are opened from disk, without network.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SHOTS = {
    "index": "index.html",
    "gallery": "gallery.html",
    "mxnet": "mxnet.html",
    "performance": "performance.html",
    "api_softmax": "generated/numba_losses.SoftmaxCrossEntropyLoss.html",
}

# Loads every page in turn into a same-origin iframe of the window's width, waits for
# MathJax, and writes what it measured into #result, which --dump-dom prints.
PROBE = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="f" style="width:{width}px;height:1000px;border:0"></iframe>
<script>
const pages = {pages};
const out = [];
const frame = document.getElementById("f");
function measure(page) {{
  const d = frame.contentDocument;
  const main = d.querySelector("article.bd-article") || d.querySelector("main") || d.body;
  const wide = [];
  for (const el of main.querySelectorAll("*")) {{
    const r = el.getBoundingClientRect();
    const box = main.getBoundingClientRect();
    if (r.right > box.right + 1 && r.width > 0) {{
      let clipped = false;  // inside a scrolling box: that box scrolls, the column does not
      for (let p = el.parentElement; p && p !== main; p = p.parentElement) {{
        const s = frame.contentWindow.getComputedStyle(p).overflowX;
        if (s === "auto" || s === "scroll" || s === "hidden") {{ clipped = true; break; }}
      }}
      if (!clipped) wide.push(el.tagName.toLowerCase() + "." + (el.className || "").toString().slice(0, 40));
    }}
  }}
  out.push({{page: page, main: [main.scrollWidth, main.clientWidth],
            doc: [d.documentElement.scrollWidth, d.documentElement.clientWidth],
            sidebar: !!d.querySelector(".bd-sidebar-primary .sidebar-primary-items__start, #bd-docs-nav"),
            rawtex: /\\\\(frac|mathrm|sum)/.test(main.innerText), wide: wide.slice(0, 5)}});
}}
function next(i) {{
  if (i >= pages.length) {{ document.getElementById("result").textContent = JSON.stringify(out); return; }}
  frame.onload = () => setTimeout(() => {{ measure(pages[i]); next(i + 1); }}, 2500);
  frame.src = pages[i];
}}
next(0);
</script></body></html>
"""


def chromium() -> str | None:
    """The Chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str], timeout: float = 300) -> str:
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("Chromium not found (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            exe,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--allow-file-access-from-files",
            f"--user-data-dir={profile}",
            *args,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def measure(site: Path, width: int = 1280) -> list[dict]:
    """One record per page of ``site``: main column and page widths, leftover sidebar, unrendered TeX."""
    pages = sorted(str(p.relative_to(site)) for p in site.rglob("*.html") if not p.name.startswith(("_", "search")))
    probe = site / "_probe_overflow.html"
    probe.write_text(PROBE.format(width=width, pages=json.dumps(pages)))
    try:
        budget = 4000 * len(pages) + 10000
        dom = _run(
            [f"--window-size={width + 40},1100", f"--virtual-time-budget={budget}", "--dump-dom", probe.as_uri()]
        )
    finally:
        probe.unlink()
    found = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    if found is None or found.group(1) == "pending":
        raise RuntimeError("the probe page did not finish")
    import html

    return json.loads(html.unescape(found.group(1)))


def problems(records: list[dict]) -> list[str]:
    """A readable line per page that overflows, keeps the empty sidebar or shows raw TeX."""
    lines = []
    for r in records:
        (main_scroll, main_client), (doc_scroll, doc_client) = r["main"], r["doc"]
        if main_scroll > main_client + 1 or r["wide"]:
            lines.append(f"{r['page']}: main column {main_scroll} px of content in {main_client} px: {r['wide']}")
        if doc_scroll > doc_client + 1:
            lines.append(f"{r['page']}: page {doc_scroll} px wide in a {doc_client} px window")
        if r["sidebar"]:
            lines.append(f"{r['page']}: has the primary (section navigation) sidebar")
        if r["rawtex"]:
            lines.append(f"{r['page']}: shows raw TeX (maths not rendered)")
    return lines


def screenshots(site: Path, out: Path, width: int = 1280, height: int = 1600) -> list[Path]:
    """Full-window PNGs of the pages in :data:`SHOTS` (2x device pixels, as on a high-DPI screen)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, page in SHOTS.items():
        path = out / f"{name}.png"
        _run(
            [
                f"--window-size={width},{height}",
                "--force-device-scale-factor=1",
                "--virtual-time-budget=8000",
                f"--screenshot={path}",
                (site / page).as_uri(),
            ]
        )
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built HTML directory (docs/_build/html)")
    parser.add_argument("--shots", type=Path, help="write screenshots into this directory")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels (1280)")
    args = parser.parse_args(argv)
    site = args.site.resolve()
    records = measure(site, args.width)
    bad = problems(records)
    for line in bad:
        print(line)
    print(f"{len(records)} pages checked at {args.width} px: {len(bad)} problems")
    if args.shots:
        for path in screenshots(site, args.shots, args.width):
            print(f"screenshot: {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("LANG", "C.UTF-8")
    sys.exit(main())
