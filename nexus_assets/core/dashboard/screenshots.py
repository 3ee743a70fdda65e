"""Screenshots of a built site for review: laptop and phone width, light and dark.

    python -m nexus_assets.core.dashboard.screenshots <site dir> <out dir> [--pages all|latest] [--asset KEY] [--panels]

For the site index, each asset's history, and each asset's latest page (``--pages all``: every
page, slow), writes ``<out>/<name>-<laptop|phone>-<light|dark>.png`` (full page) and prints the
paths (``--panels``: also one PNG per panel). Pages are opened from ``file://``, so nothing listens on the network.

Drives Debian's headless Chromium (``apt-get install -y chromium``; another binary through
``NEXUS_CHROMIUM``) with Playwright for Python (``pip install playwright``; no ``playwright
install``: the system browser is used). The browser tests share :func:`launch`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM_FLAGS", "VIEWPORTS", "find_chromium", "launch", "site_pages", "capture", "main"]

# Headless, offline, quiet: no GPU, no QUIC, no first-run, background, component-update or sync traffic.
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORTS: dict[str, dict[str, int]] = {"laptop": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}
SCHEMES: tuple[str, ...] = ("light", "dark")


def find_chromium() -> str | None:
    """The Chromium binary: ``$NEXUS_CHROMIUM``, Debian's ``/usr/bin/chromium``, or one on PATH."""
    configured = os.environ.get("NEXUS_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for candidate in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def launch(playwright: Any, executable: str | None = None) -> Any:
    """A headless Chromium browser from a started ``sync_playwright()``."""
    executable = executable or find_chromium()
    if executable is None:
        raise RuntimeError("Chromium not found: apt-get install -y chromium (or set NEXUS_CHROMIUM)")
    return playwright.chromium.launch(executable_path=executable, headless=True, args=list(CHROMIUM_FLAGS))


def site_pages(site: Path, *, every_page: bool = False, asset: str | None = None) -> list[tuple[str, Path]]:
    """``(name, file)`` of the pages to capture: the index, then per asset its history and pages."""
    pages = [("index", site / "index.html")] if (site / "index.html").is_file() else []
    for folder in sorted(site.glob("asset=*")):
        key = folder.name.removeprefix("asset=")
        if asset is not None and key != asset:
            continue
        if (folder / "index.html").is_file():
            pages.append((f"{key}-history", folder / "index.html"))
        dated = sorted(folder.glob("date=*.html"))
        for page in dated if every_page else dated[-1:]:
            pages.append((f"{key}-{page.stem.removeprefix('date=')}", page))
    return pages


def capture(browser: Any, page_file: Path, out: Path, *, viewport: str, scheme: str,
            panels: bool = False) -> list[Path]:
    """A full-page PNG of ``page_file`` once its charts are drawn (``out``); with ``panels`` also one
    PNG per panel (``<out stem>-<panel>.png``), easier to read at full size."""
    context = browser.new_context(viewport=VIEWPORTS[viewport], color_scheme=scheme, device_scale_factor=1)
    try:
        page = context.new_page()
        page.goto(page_file.resolve().as_uri())
        page.wait_for_load_state("load")
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('[data-figure]')).every("
            "d => d.getAttribute('data-rendered') === 'true' || d.classList.contains('chart-missing'))",
            timeout=30_000,
        )
        page.screenshot(path=str(out), full_page=True)
        written = [out]
        if panels:
            for name in page.eval_on_selector_all("[data-panel]", "s => s.map(e => e.dataset.panel)"):
                path = out.with_name(f"{out.stem}-{name}.png")
                page.locator(f'[data-panel="{name}"]').first.screenshot(path=str(path))
                written.append(path)
    finally:
        context.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the site folder (holds index.html)")
    parser.add_argument("out", type=Path, help="where to write the PNGs")
    parser.add_argument("--pages", choices=("latest", "all"), default="latest")
    parser.add_argument("--asset", help="only this asset's pages")
    parser.add_argument("--panels", action="store_true", help="also one PNG per panel")
    args = parser.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("needs Playwright for Python: pip install playwright (uses the system Chromium)", file=sys.stderr)
        return 2
    pages = site_pages(args.site, every_page=args.pages == "all", asset=args.asset)
    if not pages:
        print(f"no pages under {args.site}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            for name, page_file in pages:
                for viewport in VIEWPORTS:
                    for scheme in SCHEMES:
                        for path in capture(browser, page_file, args.out / f"{name}-{viewport}-{scheme}.png",
                                            viewport=viewport, scheme=scheme, panels=args.panels):
                            print(path)
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
