"""Screenshots of every tab of the app, for the README: `python scripts/screenshots.py [--out DIR]`.

Starts `python app.py` in its own process on a free loopback port, offline (`HF_HUB_OFFLINE=1`, an empty
Hugging Face cache) on a throwaway model store (or --home), so the pictures show what a fresh offline install
shows: the starter digit models, which the app trains first (a minute or two on 2 idle cores; the banner shows
it, and this script waits for it; a second run with the same --home reuses them). Then it drives Debian's Chromium (`/usr/bin/chromium`, never `playwright install`)
through each tab, does what a visitor would do there, and saves a full-page PNG per tab into
docs/screenshots/ (or --out): classify.png, compare.png, finetune.png, why-residual.png, about.png.

Needs the app's requirements and Playwright (`pip install -r requirements-test.txt`).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}
STEP_TIMEOUT_MS = 120_000
TRAIN_TIMEOUT_MS = 600_000
TABLE_ROWS = ".virtual-body [role=row]"  # a Gradio Dataframe's body rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(root: Path, home: Path, port: int, log: Path) -> subprocess.Popen:
    """`python app.py`, offline, on the store ``home``; Gradio reads the port and host from the environment."""
    hf_cache, gradio_tmp = root / "hf-cache", root / "gradio"
    for folder in (home, hf_cache, gradio_tmp):
        folder.mkdir(parents=True, exist_ok=True)
    # Not a Space, no token, no Gradio settings of the caller's: the app as `python app.py` starts it.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GRADIO_"))
           and k not in ("SYSTEM", "RESNET_HUB_MULTI_USER", "HF_HUB_CACHE", "HF_HOME")}
    env.update(RESNET_HUB_HOME=str(home), HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hf_cache), HF_HOME=str(root / "hf-home"),
               GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(gradio_tmp),
               GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_until_served(process: subprocess.Popen, url: str, log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise SystemExit(f"app.py exited ({process.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"app.py did not serve {url} within {timeout_s:.0f} s:\n"
                             f"{log.read_text(errors='replace')[-3000:]}")
        time.sleep(1)


def wait_for_starters(page, timeout_s: float) -> str:
    """Offline, the app trains its two starter digit models first; the banner says when both are ready."""
    banner = page.locator("#weights-banner")
    deadline, last = time.monotonic() + timeout_s, ""
    while True:
        text = banner.inner_text()
        if "could not be built" in text:
            raise SystemExit(f"a starter model failed to build:\n{text}")
        if text.startswith("Weights:") or len(re.findall(r"starter: ready", text)) >= 2:
            return text  # the ImageNet weights were found after all, or both starters are built
        progress = " · ".join(m.strip() for m in re.findall(r"ResNet-\d+ starter: [^\n·]*", text))
        if progress != last:
            print(f"  {progress}", flush=True)
            last = progress
        if time.monotonic() > deadline:
            raise SystemExit(f"the starters were not ready within {timeout_s:.0f} s:\n{text}")
        time.sleep(3)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def pick_example(page, file_stem: str) -> None:
    """Click an example thumbnail on the visible tab and wait until it reaches the Image input."""
    selector = f"img[src*='{file_stem}']"
    shown = page.locator(selector).count()
    page.locator(f"{selector} >> visible=true").first.click()
    page.wait_for_function(f"() => document.querySelectorAll(\"{selector}\").length > {shown}")


def text_of(selector: str) -> str:
    return f"(document.querySelector('{selector}')?.innerText ?? '')"


def classify(page) -> None:
    open_tab(page, "Classify")
    pick_example(page, "mnist-digit-3")
    page.get_by_role("button", name="Classify", exact=True).click()
    page.wait_for_function(f"() => /\\b[0-9]\\b[\\s\\S]*%/.test({text_of('#classify-label')})")
    page.wait_for_function(f"() => {text_of('#classify-info')}.trim().length > 0")
    heatmap = page.locator(".block", has=page.get_by_text("Where the model looked", exact=False))
    heatmap.locator("img").last.wait_for()
    time.sleep(1)  # let the heatmap paint


def compare(page) -> None:
    open_tab(page, "Compare")
    pick_example(page, "mnist-digit-7")
    page.get_by_role("button", name="Compare", exact=True).click()
    page.locator("#compare-chart svg .mark-rect path").first.wait_for()
    page.wait_for_function(f"() => {text_of('#compare-verdict')}.trim().length > 0")
    time.sleep(1)


def finetune(page) -> None:
    open_tab(page, "Fine-tune")
    page.get_by_label("Use the bundled MNIST sample instead (5,000 digits)").check()
    page.locator("#finetune-epochs input").fill("1")
    page.locator("#finetune-start").click()
    page.wait_for_function(f"() => /step \\d+\\/\\d+/.test({text_of('#finetune-status')})", timeout=TRAIN_TIMEOUT_MS)
    print("  training ...", flush=True)
    page.wait_for_function(f"() => {text_of('#finetune-status')}.includes('Saved as')", timeout=TRAIN_TIMEOUT_MS)
    page.wait_for_function("() => !document.querySelector('#finetune-start').disabled")
    for table in ("#finetune-confusion", "#finetune-per-class"):  # a row per digit
        page.wait_for_function(f"() => document.querySelectorAll('{table} {TABLE_ROWS}').length >= 10")
    page.wait_for_function("() => document.querySelectorAll('#finetune-mistakes img').length > 0")
    time.sleep(2)


def why_residual(page) -> None:
    open_tab(page, "Why residual?")
    for experiment in ("degradation", "gradients", "plain-vs-resnet"):
        page.locator(f"#lab-{experiment}-plot svg .mark-line path").first.wait_for()
        page.wait_for_function(f"() => {text_of(f'#lab-{experiment}-text')}.includes('Measured')")
    time.sleep(1)


def about(page) -> None:
    open_tab(page, "About")
    page.get_by_text("Why ResNet-18 has 18 layers").first.wait_for()


SHOTS = {"classify": classify, "compare": compare, "finetune": finetune, "why-residual": why_residual,
         "about": about}


def save_small_png(png: bytes, path: Path) -> None:
    """A UI screenshot in 256 colours: a few hundred KB instead of a few MB, with no visible loss."""
    import io

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots", help="folder for the PNGs")
    parser.add_argument("--tabs", nargs="+", choices=list(SHOTS), default=list(SHOTS), help="which tabs")
    parser.add_argument("--home", type=Path,
                        help="model store to run on and keep (RESNET_HUB_HOME): a second run reuses its starters "
                             "(default: a temporary one, deleted at the end)")
    parser.add_argument("--starters-timeout", type=float, default=1800,
                        help="seconds to wait for the app to train its starter models")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and the app's log")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="resnet-hub-screenshots-"))
    port, log = free_port(), root / "app.log"
    url = f"http://127.0.0.1:{port}/"
    print(f"starting app.py on {url} (store and log in {root})", flush=True)
    process = start_app(root, args.home or root / "home", port, log)
    try:
        wait_until_served(process, url, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                page.set_default_timeout(STEP_TIMEOUT_MS)
                page.goto(url, wait_until="domcontentloaded")  # "networkidle" never comes: the page keeps a stream
                page.locator("#weights-banner").wait_for()
                print("waiting for the starter models ...", flush=True)
                wait_for_starters(page, args.starters_timeout)
                for name in args.tabs:
                    print(f"{name} ...", flush=True)
                    started = time.monotonic()
                    try:
                        SHOTS[name](page)
                    except Exception:
                        page.screenshot(path=str(args.out / f"{name}-failed.png"), full_page=True)
                        print(f"  failed: what the page showed is in {args.out / f'{name}-failed.png'}", flush=True)
                        raise
                    path = args.out / f"{name}.png"
                    save_small_png(page.screenshot(full_page=True), path)
                    print(f"  {path} ({path.stat().st_size // 1024} KB, {time.monotonic() - started:.0f} s)",
                          flush=True)
            finally:
                browser.close()
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        if not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
