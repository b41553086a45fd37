"""The app in a real browser: Debian's headless Chromium, driven by Playwright.

Playwright's own browser download is never used (it needs the network); the
system /usr/bin/chromium is. The tests assert on what is drawn and listed: the
lines and axes of a plot (Gradio draws its plots as SVG with Vega), the bars of a
chart against the table beside it, the options of every chooser after a reload.
Screenshots of every tab (idle, running, done, error) land in test-artifacts/.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from resnet_hub.ui.app import BANNER_BEFORE_LOAD
from resnet_hub.ui.charts import lab_gradient_curves
from resnet_hub.ui.lab import LAB_FIRST

from .test_app import colour_zip

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
TABS = ["Classify", "Compare", "Fine-tune", "About"]
CHOOSERS = ["#classify-model", "#compare-model-a", "#compare-model-b", "#finetune-base", "#push-model"]
TIMEOUT_MS = 60_000
TRAIN_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def browser(running_app, tmp_path_factory):
    """A fresh Chromium profile; every test opens its own page on the app."""
    on_ci = os.environ.get("CI") == "true"
    if not CHROMIUM.exists():
        if on_ci:
            pytest.fail(f"{CHROMIUM} is missing on CI: install Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package to run the browser tests")
    if on_ci:
        import playwright.sync_api as playwright_api
    else:
        playwright_api = pytest.importorskip("playwright.sync_api")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=FLAGS, headless=True, viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(TIMEOUT_MS)
        context.page_errors = []
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser, running_app, request):
    page = browser.new_page()
    # Which test's page, and where in Gradio's bundle: a bare message cannot be traced back.
    page.on("pageerror", lambda error: browser.page_errors.append(
        f"{request.node.name}: {error}\n{(getattr(error, 'stack', '') or '')[:600]}"))
    page.goto(running_app.url, wait_until="domcontentloaded")  # "networkidle" never comes: the page keeps a stream open
    wait_for_page_load(page)
    try:
        yield page
    finally:
        page.close()


def wait_for_page_load(page) -> None:
    """Until the page's load event has filled in the banner, the choosers and the example captions."""
    page.locator("#weights-banner").wait_for()
    page.wait_for_function("(before) => !document.querySelector('#weights-banner').innerText.includes(before)",
                           arg=BANNER_BEFORE_LOAD)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def shoot(page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def pick_example(page, file_stem: str) -> None:
    """Click an example thumbnail on the visible tab and wait until it reaches the Image input."""
    selector = f"img[src*='{file_stem}']"
    shown = page.locator(selector).count()
    page.locator(f"{selector} >> visible=true").first.click()
    page.wait_for_function(f"() => document.querySelectorAll(\"{selector}\").length > {shown}")


def chooser_options(page, selector: str) -> list[str]:
    """The options a chooser lists when the visitor opens it."""
    page.locator(f"{selector} input").click()
    options = page.get_by_role("option")
    try:
        options.first.wait_for(timeout=3000)
    except Exception as e:  # noqa: BLE001 - Playwright's TimeoutError: a chooser may list nothing
        if type(e).__name__ != "TimeoutError":
            raise
    listed = [o.strip() for o in options.all_inner_texts()]
    page.keyboard.press("Escape")
    return listed


def toast_texts(page) -> list[str]:
    return [t.strip() for t in page.get_by_test_id("toast-text").all_inner_texts()]


# -- reading what Vega drew ---------------------------------------------------------------------

READ_AXES = """(root) => {
  const axes = {};
  for (const axis of root.querySelectorAll('g.role-axis[aria-label]')) {
    const which = axis.getAttribute('aria-label').startsWith('X') ? 'x' : 'y';
    // Each label's centre sits on its tick (Vega centres x labels and middles y labels).
    axes[which] = [...axis.querySelectorAll('g.role-axis-label text')]
      .filter(t => t.textContent && getComputedStyle(t).opacity !== '0' && t.getAttribute('opacity') !== '0')
      .map(t => { const r = t.getBoundingClientRect();
                  return {label: t.textContent, at: which === 'y' ? (r.top + r.bottom) / 2 : (r.left + r.right) / 2}; })
      .sort((a, b) => which === 'y' ? b.at - a.at : a.at - b.at);  // smallest value first
  }
  return axes;
}"""


def axes(page, plot: str) -> dict:
    """Per axis, its visible tick labels with their pixel positions, in order of value."""
    return page.locator(f"{plot} svg").first.evaluate(READ_AXES)


def labels(axis: list[dict]) -> list[str]:
    return [tick["label"] for tick in axis]


def value_at(axis: list[dict], pixel: float) -> float:
    """The data value at a pixel position, from the axis's own numeric tick labels."""
    (p0, v0), (p1, v1) = ((t["at"], float(t["label"].replace(",", ""))) for t in (axis[0], axis[-1]))
    return v0 + (pixel - p0) * (v1 - v0) / (p1 - p0)


def is_number(text: str) -> bool:
    return re.fullmatch(r"-?[\d,]*\.?\d+", text.strip()) is not None


def drawn_lines(page, plot: str) -> list[dict]:
    """Each line drawn in a plot: its points, the most of them joined in one stroke (Vega starts a new piece, "M",
    after a gap, and draws a piece of one point as nothing a visitor sees), and its stroke colour (none: not seen)."""
    return page.locator(f"{plot} svg .mark-line path").evaluate_all(
        "paths => paths.map(p => { const pieces = (p.getAttribute('d') || '').split('M').filter(s => s.trim())"
        "  .map(s => 1 + (s.match(/L/g) || []).length);"
        " return {points: pieces.reduce((a, b) => a + b, 0), longest: Math.max(0, ...pieces),"
        " stroke: p.getAttribute('stroke') || getComputedStyle(p).stroke}; })")


def legend_entries(page, plot: str) -> list[str]:
    return page.locator(f"{plot} svg .role-legend-label text").evaluate_all("ts => ts.map(t => t.textContent)")


# -- the page -----------------------------------------------------------------------------------


def test_the_page_shows_the_offline_banner_with_the_starters_measured_here(page):
    banner = page.locator("#weights-banner").inner_text()
    assert "Offline: the ImageNet weights are not reachable" in banner
    assert "they know only the digits 0-9" in banner
    assert re.search(r"ResNet-50 starter: ready \(trained on this machine in \d+ s", banner)


@pytest.mark.parametrize("tab", TABS)
def test_each_tab_opens(page, artifacts, tab):
    open_tab(page, tab)
    assert page.get_by_role("tab", name=tab, exact=True).get_attribute("aria-selected") == "true"
    if tab == "About":
        page.get_by_text("Why ResNet-18 has 18 layers").wait_for()
        table = page.locator("table", has_text="layer4").first
        assert "residual blocks" in table.inner_text()
    shoot(page, artifacts, f"tab-{tab.lower()}-idle")


READ_HEADERS = "(root) => [...root.querySelectorAll('[role=columnheader]')].map(h => h.innerText.trim()).filter(t => t)"


@pytest.mark.parametrize("tab, table, headers", [
    ("Compare", "#compare-timings", ["measure", "model A", "model B"]),
    ("Fine-tune", "#finetune-confusion", ["true \\ predicted"]),
    ("Fine-tune", "#finetune-per-class", ["class", "precision", "recall", "F1", "support"]),
])
def test_before_any_result_a_table_shows_its_own_column_names(page, tab, table, headers):
    """Not a placeholder '1 2 3' header row: the visitor sees what the table will hold."""
    open_tab(page, tab)
    page.locator(f"{table} [role=columnheader]").first.wait_for()
    assert page.locator(table).evaluate(READ_HEADERS) == headers


def test_offline_the_digit_examples_come_first_and_the_photos_say_what_they_are(page):
    open_tab(page, "Classify")
    page.get_by_text("Examples: real MNIST digits").first.wait_for()
    text = page.locator("body").inner_text()
    digits, photos = text.find("Examples: real MNIST digits"), text.find("Photos (scikit-image)")
    assert 0 <= digits < photos
    assert "the offline starter models know only digits" in text[photos:photos + 200]


def test_classify_an_example_digit(page, artifacts):
    open_tab(page, "Classify")
    pick_example(page, "mnist-digit-3")
    page.get_by_role("button", name="Classify", exact=True).click()
    try:
        page.wait_for_function(
            "() => /\\b[0-9]\\b[\\s\\S]*%/.test(document.querySelector('#classify-label')?.innerText ?? '')")
    finally:
        shoot(page, artifacts, "tab-classify-done")
    label = page.locator("#classify-label").inner_text()
    assert re.search(r"^[0-9]$", label, re.MULTILINE) and "%" in label
    assert "centred and scaled the way MNIST digits are" in page.locator("#classify-info").inner_text()
    # which engine answered: torch fp32 while the engine is still being chosen in the background, and says so
    engine = re.search(r"engine: (\w+ \w+)( \(.*chosen in the background.*\))?",
                       page.locator("#classify-info").inner_text())
    assert engine and (engine.group(1) == "torch fp32" or not engine.group(2)), page.locator("#classify-info").inner_text()


def test_a_photo_sent_to_a_digit_model_gets_a_clear_notice(page, artifacts):
    open_tab(page, "Classify")
    pick_example(page, "chelsea")
    page.get_by_role("button", name="Classify", exact=True).click()
    info = page.locator("#classify-info")
    page.wait_for_function("() => (document.querySelector('#classify-info')?.innerText ?? '').includes('photo')")
    shoot(page, artifacts, "tab-classify-photo-on-digit-model")
    assert "This looks like a photo, not a digit" in info.inner_text()
    assert "says nothing about the photo" in info.inner_text()
    assert any("This looks like a photo" in t for t in toast_texts(page))


def test_a_one_pixel_upload_is_answered_with_a_notice_that_it_shows_nothing(page, artifacts, tmp_path):
    """It got "1", 86%, with only the note that it was centred like a digit."""
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    open_tab(page, "Classify")
    page.locator("#classify-image input[type=file]").set_input_files(str(tmp_path / "dot.png"))
    page.get_by_role("button", name="Classify", exact=True).click()
    page.wait_for_function("() => (document.querySelector('#classify-info')?.innerText ?? '').includes('1x1')")
    shoot(page, artifacts, "tab-classify-one-pixel")
    assert "This image shows nothing to recognise: it is 1x1 px, so any answer is a guess" in \
        page.locator("#classify-info").inner_text()
    assert any("shows nothing to recognise" in t for t in toast_texts(page))


def test_an_error_stays_readable_until_the_visitor_closes_it(page, artifacts):
    open_tab(page, "Classify")
    page.get_by_role("button", name="Classify", exact=True).click()  # no image
    page.get_by_test_id("toast-text").first.wait_for()
    time.sleep(15)  # Gradio's default hid errors after 10 s, leaving a bare "Error" badge
    shoot(page, artifacts, "tab-classify-error")
    assert any(t.startswith("no image: upload one") for t in toast_texts(page))
    page.get_by_test_id("toast-close").first.click()
    page.wait_for_function("() => document.querySelectorAll('[data-testid=toast-text]').length === 0")


def test_an_error_names_a_model_with_its_quotes_and_leaves_no_earlier_answer_behind_it(page, artifacts):
    """Gradio's page stripped a message's first and last quote marks; and the last answer stayed under the error,
    as if it were this request's."""
    open_tab(page, "Classify")
    pick_example(page, "mnist-digit-3")
    page.get_by_role("button", name="Classify", exact=True).click()
    page.wait_for_function("() => /%/.test(document.querySelector('#classify-label')?.innerText ?? '')")
    chooser = page.locator("#classify-model input")
    chooser.fill("no-such-model")
    chooser.press("Enter")
    page.get_by_role("button", name="Classify", exact=True).click()
    page.get_by_test_id("toast-text").first.wait_for()
    shoot(page, artifacts, "tab-classify-unknown-model")
    assert any(t.startswith("'no-such-model' is not a model here") and "'timm/resnet50.a1_in1k'" in t
               for t in toast_texts(page)), toast_texts(page)
    assert "%" not in page.locator("#classify-label").inner_text()
    assert "ms for this call" not in page.locator("#classify-info").inner_text()  # only the error's badge


def test_the_push_chooser_lists_only_models_fine_tuned_here(page):
    open_tab(page, "Fine-tune")
    page.get_by_text("Push to the Hugging Face Hub").click()
    listed = chooser_options(page, "#push-model")  # empty before any fine-tune
    assert not any(name.startswith(("ResNet-18", "ResNet-50")) for name in listed), listed
    assert all("(fine-tuned here" in name for name in listed), listed


def test_the_compare_chart_draws_each_bar_at_its_table_value(page, artifacts):
    """And again for a second pair on the same page: its bars were drawn without a fill (the chart kept the first
    pair's colours), so the chart showed nothing but its axes."""
    open_tab(page, "Compare")
    pick_example(page, "mnist-digit-7")
    page.get_by_role("button", name="Compare", exact=True).click()
    page.locator("#compare-chart svg .mark-rect path").first.wait_for()
    shoot(page, artifacts, "tab-compare-done")
    models = compared_bars_match_the_table(page)
    assert models == ["ResNet-18 (starter digits)", "ResNet-50 (starter digits)"]

    page.locator("#compare-model-a input").fill("resnet50")
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_function("() => document.querySelector('#compare-timings').innerText.includes('#2')")
    shoot(page, artifacts, "tab-compare-second-pair")
    again = compared_bars_match_the_table(page)
    assert again != models and all(name.startswith("ResNet-50 (starter digits)") for name in again), again


def compared_bars_match_the_table(page) -> list[str]:
    """The compare tab's models, after checking that each of its six bars is drawn, filled in its model's colour, at
    its table value, from 0."""
    # The table as the visitor reads it: a header row, then one measure per row, a cell per line.
    cells = [c.strip() for c in page.locator("#compare-timings").inner_text().splitlines() if c.strip()]
    start = cells.index("measure")
    headers, body = cells[start:start + 3], cells[start + 3:]
    rows = [body[i:i + 3] for i in range(0, len(body) - len(body) % 3, 3)]
    value = {(headers[i], row[0]): row[i] for row in rows for i in range(1, len(headers))}
    models = headers[1:]
    verdict = page.locator("#compare-verdict").inner_text()
    for model in models:  # the engine each model ran on, and why: shown, not only in the API
        engine = value[(model, "engine")]
        assert engine.split()[0] in ("torch", "openvino")
        assert f"{model} runs on {engine}, the fastest of" in verdict and "checked paths" in verdict
    assert legend_entries(page, "#compare-chart") == ["model A", "model B"]  # the table's column heads name them

    y = axes(page, "#compare-chart")["y"]
    assert all(is_number(t) for t in labels(y)) and len(y) >= 2
    bars = page.locator("#compare-chart svg .mark-rect path").evaluate_all(
        "ps => ps.map(p => ({label: p.getAttribute('aria-label'), top: p.getBoundingClientRect().top,"
        " bottom: p.getBoundingClientRect().bottom, fill: p.getAttribute('fill') || getComputedStyle(p).fill}))")
    assert len(bars) == 6  # p10, median and p90 for each model, side by side
    fills = {}
    pixel = 2 * abs(value_at(y, y[0]["at"] + 1) - value_at(y, y[0]["at"]))  # what 2 px of the axis are worth
    for bar in bars:
        which = re.search(r"statistic: ([AB]) (p10|median|p90);", bar["label"])
        model, stat = models["AB".index(which[1])], which[2]
        assert bar["fill"] not in ("", "none", "transparent"), bar
        fills.setdefault(model, set()).add(bar["fill"])
        assert (model, f"{stat} (ms)") in value, (headers, rows)
        table_ms = float(value[(model, f"{stat} (ms)")].replace(",", ""))
        assert value_at(y, bar["bottom"]) == pytest.approx(0, abs=pixel)  # every bar starts at 0: none is stacked
        assert value_at(y, bar["top"]) == pytest.approx(table_ms, rel=0.02, abs=pixel)
    assert all(len(f) == 1 for f in fills.values()) and len(set.union(*fills.values())) == 2, fills
    return models


def test_compare_without_an_image_is_a_readable_error(page, artifacts):
    open_tab(page, "Compare")
    page.get_by_role("button", name="Compare", exact=True).click()
    page.get_by_test_id("toast-text").first.wait_for()
    shoot(page, artifacts, "tab-compare-error")
    assert any(t.startswith("no image") for t in toast_texts(page))


def test_finetune_without_data_is_a_readable_error(page, artifacts):
    open_tab(page, "Fine-tune")
    page.locator("#finetune-start").click()
    page.get_by_test_id("toast-text").first.wait_for()
    shoot(page, artifacts, "tab-fine-tune-error")
    assert any(t.startswith("no data: upload a .zip") for t in toast_texts(page))


def train_in_the_browser(page, artifacts, data: Path, *, epochs: int = 4, shot: str | None = None) -> str:
    """Upload a zip on the Fine-tune tab, leave the name empty, press Start; the final status text."""
    open_tab(page, "Fine-tune")
    upload = page.locator("#finetune-zip input[type=file]")
    if upload.count():  # else the zip of the last run is still there: train on it again
        upload.set_input_files(str(data))
        page.wait_for_function("() => !document.querySelector('#finetune-zip input[type=file]')")
    page.locator("#finetune-epochs input").fill(str(epochs))
    page.locator("#finetune-start").click()
    start = page.locator("#finetune-start")
    page.wait_for_function("() => /step \\d+\\/\\d+/.test(document.querySelector('#finetune-status')?.innerText ?? '')",
                           timeout=TRAIN_TIMEOUT_MS)
    if shot:
        shoot(page, artifacts, shot)
    # While it runs, Start says so (it is not silently ignored) and no overlay hides the plots or inputs.
    running = start.is_disabled(), start.inner_text()
    page.wait_for_function("() => (document.querySelector('#finetune-status')?.innerText ?? '').includes('Saved as')",
                           timeout=TRAIN_TIMEOUT_MS)
    page.wait_for_function("() => !document.querySelector('#finetune-start').disabled")
    assert running[0] and "Training" in running[1]
    return page.locator("#finetune-status").inner_text()


def noise_zip(path: Path, classes=("a", "b", "c"), per_class: int = 30) -> Path:
    """Classes that cannot be told apart (the same grey noise in every folder): a run is sure to make mistakes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    with zipfile.ZipFile(path, "w") as z:
        for name in classes:
            for i in range(per_class):
                buffer = io.BytesIO()
                Image.fromarray(rng.integers(60, 200, (32, 32, 3), dtype=np.uint8)).save(buffer, format="PNG")
                z.writestr(f"{name}/{name}-{i}.png", buffer.getvalue())
    return path


# Gradio 6 draws a Dataframe's body as a virtual grid: div rows of role=row, cells of role=gridcell.
BODY_ROWS = ".virtual-body [role=row]"
READ_TABLE = f"""(root) => [...root.querySelectorAll('{BODY_ROWS}')].map(
  row => [...row.querySelectorAll('[role=gridcell]')].map(cell => cell.innerText.trim()))"""


def start_a_long_run(page, data: Path, epochs: int = 40) -> None:
    open_tab(page, "Fine-tune")
    upload = page.locator("#finetune-zip input[type=file]")
    if upload.count():
        upload.set_input_files(str(data))
        page.wait_for_function("() => !document.querySelector('#finetune-zip input[type=file]')")
    page.locator("#finetune-epochs input").fill(str(epochs))
    page.locator("#finetune-start").click()
    page.wait_for_function("() => /step \\d+\\/\\d+/.test(document.querySelector('#finetune-status')?.innerText ?? '')",
                           timeout=TRAIN_TIMEOUT_MS)


def test_stop_keeps_what_the_run_learned_and_cancel_keeps_nothing(page, artifacts, running_app, tmp_path):
    data = colour_zip(tmp_path / "stopped.zip", per_class=30)
    start_a_long_run(page, data)
    page.locator("#finetune-stop").click()
    page.wait_for_function("() => (document.querySelector('#finetune-status')?.innerText ?? '').includes('Saved as')",
                           timeout=TRAIN_TIMEOUT_MS)
    status = page.locator("#finetune-status").inner_text()
    shoot(page, artifacts, "tab-fine-tune-stopped")
    assert "Stopped on request at epoch" in status and "kept what it had learned" in status
    assert "Saved as stopped-resnet18" in status
    assert (running_app.home / "models" / "stopped-resnet18" / "model.safetensors").is_file()

    page.wait_for_function("() => !document.querySelector('#finetune-start').disabled")
    start_a_long_run(page, data)
    page.locator("#finetune-cancel").click()
    page.wait_for_function(
        "() => (document.querySelector('#finetune-status')?.innerText ?? '').includes('cancelled on request: nothing saved')",
        timeout=TRAIN_TIMEOUT_MS)
    shoot(page, artifacts, "tab-fine-tune-cancelled")
    stored = sorted(p.name for p in (running_app.home / "models").iterdir())
    assert "stopped-resnet18-2" not in stored and not any(name.startswith(".") for name in stored)


def test_clicking_a_confusion_cell_shows_its_misclassified_images_with_per_class_scores(page, artifacts, tmp_path):
    train_in_the_browser(page, artifacts, noise_zip(tmp_path / "noise.zip"), epochs=3)
    table = page.locator("#finetune-confusion")
    page.wait_for_function(f"() => document.querySelectorAll('#finetune-confusion {BODY_ROWS}').length === 3")
    rows = table.evaluate(READ_TABLE)
    assert [r[0] for r in rows] == ["a", "b", "c"]
    counts = [[int(v) for v in r[1:]] for r in rows]
    assert sum(map(sum, counts)) == 18  # 6 validation images per class
    # the per-class table beside it: one row per class, precision/recall/F1 and the support of 6 each
    page.wait_for_function(f"() => document.querySelectorAll('#finetune-per-class {BODY_ROWS}').length === 3")
    per_class = page.locator("#finetune-per-class").evaluate(READ_TABLE)
    assert [r[0] for r in per_class] == ["a", "b", "c"] and [r[-1] for r in per_class] == ["6", "6", "6"]
    assert all(re.fullmatch(r"[01]\.\d\d", score) for r in per_class for score in r[1:4]), per_class

    i, j = next((i, j) for i in range(3) for j in range(3) if i != j and counts[i][j])
    table.locator(BODY_ROWS).nth(i).locator("[role=gridcell]").nth(j + 1).click()
    caption = page.locator("#finetune-mistakes-caption")
    expected = f"{counts[i][j]} misclassified validation image{'s' * (counts[i][j] != 1)}: {'abc'[i]} seen as {'abc'[j]}"
    page.wait_for_function(
        "(text) => (document.querySelector('#finetune-mistakes-caption')?.innerText ?? '').includes(text)", arg=expected)
    page.wait_for_function("(n) => document.querySelectorAll('#finetune-mistakes img').length === n", arg=counts[i][j])
    shoot(page, artifacts, "tab-fine-tune-mistakes")
    assert page.locator("#finetune-true-class input").input_value() == "abc"[i]
    assert page.locator("#finetune-predicted-class input").input_value() == "abc"[j]
    images = page.locator("#finetune-mistakes img")
    assert all(images.nth(k).evaluate("img => img.naturalWidth > 0") for k in range(images.count()))
    assert expected in caption.inner_text()
    # Every tile whole and in sight: no label drawn over the first row, none cut off at the gallery's bottom.
    covered = page.locator("#finetune-mistakes").evaluate("""root => {
        const box = root.getBoundingClientRect(), label = root.querySelector('[data-testid=block-label]');
        const under = label ? label.getBoundingClientRect().bottom : box.top;
        return [...root.querySelectorAll('img')].map(img => img.getBoundingClientRect())
            .filter(r => r.top < under - 1 || r.bottom > box.bottom + 1).length }""")
    assert covered == 0


def test_ten_classes_fit_the_results_column_and_one_epoch_draws_its_validation_line_from_the_start(
        page, artifacts, tmp_path):
    """A 10-class matrix overflowed the column (the last class out of sight); one epoch's validation accuracy was
    one point, which a line plot does not draw; a gallery caption cut at its end hid what was mistaken for what."""
    classes = tuple("abcdefghij")
    status = train_in_the_browser(page, artifacts, noise_zip(tmp_path / "ten.zip", classes, per_class=10), epochs=1)
    assert re.search(r"Validation accuracy [\d.]+% \((from [\d.]+% before training|lower than the [\d.]+% it "
                     r"started from)", status), status
    page.wait_for_function(f"() => document.querySelectorAll('#finetune-confusion {BODY_ROWS}').length === 10")
    fits = page.locator("#finetune-confusion").evaluate(
        "root => { const box = root.getBoundingClientRect(); return [...root.querySelectorAll('thead th')]"
        ".map(th => [th.innerText.trim(), th.getBoundingClientRect().right <= box.right + 1]) }")
    assert [name for name, _ in fits] == ["true \\ predicted", *classes] and all(inside for _, inside in fits), fits
    lines = [line for line in drawn_lines(page, "#accuracy-plot") if line["stroke"] not in ("", "none")]
    # both lines whole: the validation one from before training to the end of its one epoch, unbroken
    assert len(lines) == 2 and all(line["longest"] == line["points"] >= 2 for line in lines), lines
    # colours in a fixed order, whatever the first frame held (the validation before training, alone, swapped them)
    assert legend_entries(page, "#accuracy-plot") == ["train accuracy", "validation accuracy"]
    page.wait_for_function("() => document.querySelectorAll('#finetune-mistakes img').length > 0")
    shoot(page, artifacts, "tab-fine-tune-ten-classes")
    captions = page.locator("#finetune-mistakes").inner_text()
    assert re.search(r"^[a-j] seen as [a-j] \(\d+%\): [a-j]/", captions, re.MULTILINE), captions


def test_finetune_draws_its_curves_saves_without_overwriting_and_lists_the_model_after_a_reload(
        page, artifacts, running_app, tmp_path):
    data = colour_zip(tmp_path / "colours.zip", per_class=30)
    preparing = running_app.module.ctx.jobs.preparing_bases  # the app's start converts its default bases' frozen parts
    preparing.join(300)
    assert not preparing.is_alive()
    first = train_in_the_browser(page, artifacts, data, shot="tab-fine-tune-running")
    page.locator("#accuracy-plot svg .mark-line path").first.wait_for()
    shoot(page, artifacts, "tab-fine-tune-done")
    assert "Saved as colours-resnet18" in first
    # ...so even the first run on the base reads its frozen part (default freeze, 128 px), not torch: the run says
    # what computed its cache.
    read = r"frozen part on OpenVINO (int8|bf16|fp32) \((read from the engine cache|already loaded) in"
    openvino = not __import__("resnet_hub.engines").engines.openvino_available()
    if openvino:
        assert re.search(read, first), first

    # The curves: two plots, each with few numeric ticks on both axes and lines actually drawn.
    for plot, series in (("#loss-plot", 1), ("#accuracy-plot", 2)):
        drawn = axes(page, plot)
        for which in ("x", "y"):
            ticks = labels(drawn[which])
            assert ticks and all(is_number(t) for t in ticks), (plot, which, ticks)
            # A numeric scale: few ticks, evenly spaced in value (categories would list every raw value).
            values = [float(t.replace(",", "")) for t in ticks]
            steps = {round(b - a, 9) for a, b in zip(values, values[1:])}
            assert len(ticks) <= 20 and len(steps) == 1, (plot, which, " ".join(ticks))
        lines = drawn_lines(page, plot)
        assert len(lines) == series and all(line["longest"] == line["points"] >= 2 for line in lines), (plot, lines)
        assert all(line["stroke"] not in ("", "none") for line in lines), (plot, lines)
        assert len(set(line["stroke"] for line in lines)) == series  # one colour per series
        assert len(legend_entries(page, plot)) == series
    accuracy_ticks = [float(t) for t in labels(axes(page, "#accuracy-plot")["y"])]
    assert min(accuracy_ticks) == 0 and max(accuracy_ticks) == 1

    # The card in the download names the base by name, never by its path on the server.
    href = page.locator("#finetune-download a").first.get_attribute("href")
    archive = zipfile.ZipFile(io.BytesIO(page.request.get(href).body()))
    card = next(archive.read(n).decode() for n in archive.namelist() if n.endswith("README.md"))
    assert "starter-resnet18-mnist" in card
    assert str(running_app.home) not in card and not re.search(r"(^|[\s|(`])/(tmp|root|home|srv)/", card)

    # A second run with no name gets a name of its own.
    second = train_in_the_browser(page, artifacts, data, epochs=2)
    assert "Saved as colours-resnet18-2" in second
    if openvino:
        assert re.search(read, second), second
    stored = {p.name for p in (running_app.home / "models").iterdir()}
    assert {"colours-resnet18", "colours-resnet18-2"} <= stored

    page.reload(wait_until="domcontentloaded")
    wait_for_page_load(page)
    for selector, tab in zip(CHOOSERS, ["Classify", "Compare", "Compare", "Fine-tune", "Fine-tune"]):
        open_tab(page, tab)
        if not page.locator(selector).is_visible():  # the push chooser sits in a closed accordion
            page.get_by_text("Push to the Hugging Face Hub").click()
        listed = chooser_options(page, selector)
        assert {"colours-resnet18 (fine-tuned here)", "colours-resnet18-2 (fine-tuned here)"} <= set(listed), selector

    # ...and typed by its name, it serves.
    open_tab(page, "Classify")
    page.locator("#classify-model input").fill("colours-resnet18-2")
    page.keyboard.press("Enter")
    pick_example(page, "chelsea")
    page.get_by_role("button", name="Classify", exact=True).click()
    page.wait_for_function("() => (document.querySelector('#classify-info')?.innerText ?? '').includes('colours-resnet18-2')")
    assert {"red", "blue"} & set(page.locator("#classify-label").inner_text().split())


def test_the_page_raised_no_uncaught_errors(browser):
    assert browser.page_errors == []


# -- Why residual? ---------------------------------------------------------------------------------


def tiny_lab_settings():
    from resnet_hub.lab import DegradationSettings, GradientSettings, PlainVsResNetSettings, Recipe

    recipe = Recipe(epochs=2, batch_size=32, train_limit=128, warmup_epochs=0.5)
    return {
        "degradation": DegradationSettings(depths=(8, 14), width=2, seeds=(0,), recipe=recipe),
        "gradients": GradientSettings(depths=(8, 14), width=4, batch_size=16, seed=0),
        "plain-vs-resnet": PlainVsResNetSettings(resnet_depth=8, width=2, cnn_channels=(4, 8), seeds=(0,),
                                                 recipe=recipe),
    }


def points_drawn(page, plot: str) -> int:
    return sum(line["points"] for line in drawn_lines(page, plot) if line["stroke"] not in ("", "none"))


def test_why_residual_shows_the_cached_results_and_runs_a_live_one(browser, running_app, artifacts, monkeypatch):
    from resnet_hub.lab import cache_path, load_cached, run_experiment

    tiny = tiny_lab_settings()
    for experiment, settings in tiny.items():  # what `python -m resnet_hub why-residual all` leaves, but tiny
        run_experiment(experiment, settings, device="cpu")
    monkeypatch.setattr(running_app.module.ctx.lab, "live_settings", {
        **tiny, "degradation": dataclasses.replace(tiny["degradation"],
                                                   recipe=dataclasses.replace(tiny["degradation"].recipe, epochs=6))})
    page = browser.new_page()
    page.on("pageerror", lambda error: browser.page_errors.append(str(error)))
    page.goto(running_app.url, wait_until="domcontentloaded")
    open_tab(page, "Why residual?")

    # The cached results, drawn at once: every series a line with a colour, and what was measured said beside it.
    # The gradients: a variant per line, where BatchNorm makes two initialisations one line, labelled with both.
    variants = lab_gradient_curves(load_cached("gradients"))["variant"].unique()
    assert 6 <= len(variants) <= 8 and any(v.endswith("any init") for v in variants)
    for experiment, series in (("degradation", 4), ("gradients", len(variants)), ("plain-vs-resnet", 2)):
        plot = f"#lab-{experiment}-plot"
        page.locator(f"{plot} svg .mark-line path").first.wait_for()
        lines = [line for line in drawn_lines(page, plot) if line["stroke"] not in ("", "none")]
        assert len(lines) == series and all(line["longest"] >= 2 for line in lines), (experiment, lines)
        assert "Look for:" in page.locator(f"#lab-{experiment}-look-for").inner_text()
        assert "Measured" in page.locator(f"#lab-{experiment}-text").inner_text()
    assert "plain-14 trains worse than plain-8" in page.locator("#lab-degradation-text").inner_text()
    shoot(page, artifacts, "tab-why-residual-idle")

    # A live run: its curve grows as it trains, and Stop keeps what was drawn, caching nothing.
    cached_before = cache_path("degradation").read_bytes()
    page.locator("#lab-experiment").get_by_role("radio", name="degradation", exact=True).check()
    page.locator("#lab-run").click()
    page.wait_for_function("() => /\\d+%/.test(document.querySelector('#lab-status')?.innerText ?? '')")
    assert page.locator("#lab-run").is_disabled() and "Running" in page.locator("#lab-run").inner_text()
    page.wait_for_function("() => document.querySelectorAll('#lab-live-plot svg .mark-line path').length > 0")
    assert "Live: training error of the short run" in page.locator("#lab-live-plot").inner_text()
    assert labels(axes(page, "#lab-live-plot")["y"])[0] == "0.0" and labels(axes(page, "#lab-live-plot")["y"])[-1] == "1.0"
    first = points_drawn(page, "#lab-live-plot")
    page.wait_for_function(f"""() => [...document.querySelectorAll('#lab-live-plot svg .mark-line path')]
        .map(p => (p.getAttribute('d') || '').split(/[ML]/).filter(s => s.trim()).length)
        .reduce((a, b) => a + b, 0) > {first + 2}""", timeout=TRAIN_TIMEOUT_MS)
    shoot(page, artifacts, "tab-why-residual-running")
    page.locator("#lab-stop").click()
    page.wait_for_function("() => (document.querySelector('#lab-status')?.innerText ?? '').includes('Stopped')",
                           timeout=TRAIN_TIMEOUT_MS)
    shoot(page, artifacts, "tab-why-residual-stopped")
    page.wait_for_function("() => !document.querySelector('#lab-run').disabled")
    assert points_drawn(page, "#lab-live-plot") > first
    assert cache_path("degradation").read_bytes() == cached_before
    page.close()


def test_the_live_experiment_chosen_when_the_page_opens_draws_on_its_own_chart(browser, running_app, artifacts,
                                                                              monkeypatch):
    """The page opens on the gradients: Run draws them at once, without the visitor first choosing another
    experiment and back (the radio's change event never fires for its first value)."""
    monkeypatch.setattr(running_app.module.ctx.lab, "live_settings", tiny_lab_settings())
    page = browser.new_page()
    page.on("pageerror", lambda error: browser.page_errors.append(str(error)))
    page.goto(running_app.url, wait_until="domcontentloaded")
    open_tab(page, "Why residual?")
    chosen = page.locator("#lab-experiment input:checked").get_attribute("value")
    assert chosen == LAB_FIRST == "gradients"
    assert page.locator("#lab-live-gradients").is_visible() and not page.locator("#lab-live-plot").is_visible()
    page.locator("#lab-run").click()
    page.wait_for_function("() => (document.querySelector('#lab-status')?.innerText ?? '').includes('Done')",
                           timeout=TRAIN_TIMEOUT_MS)
    page.locator("#lab-live-gradients svg .mark-line path").first.wait_for()
    shoot(page, artifacts, "tab-why-residual-live-gradients")
    lines = [line for line in drawn_lines(page, "#lab-live-gradients") if line["stroke"] not in ("", "none")]
    assert len(lines) >= 6 and all(line["longest"] >= 2 for line in lines), lines
    assert "the short version (depths 8, 14)" in page.locator("#lab-status").inner_text()
    page.close()


def test_a_live_lab_run_whose_page_is_closed_stops_and_frees_the_training_slot(browser, running_app, monkeypatch):
    """No one watches it any more: it held the one training slot, and the next visitor waited in line behind it."""
    from resnet_hub.training_slot import TRAINING

    tiny = tiny_lab_settings()
    slow = dataclasses.replace(tiny["degradation"], recipe=dataclasses.replace(tiny["degradation"].recipe, epochs=200))
    monkeypatch.setattr(running_app.module.ctx.lab, "live_settings", {**tiny, "degradation": slow})
    page = browser.new_page()
    page.goto(running_app.url, wait_until="domcontentloaded")
    open_tab(page, "Why residual?")
    page.locator("#lab-experiment").get_by_role("radio", name="degradation", exact=True).check()
    page.locator("#lab-run").click()
    page.wait_for_function("() => /\\d+%/.test(document.querySelector('#lab-status')?.innerText ?? '')",
                           timeout=TRAIN_TIMEOUT_MS)
    assert TRAINING.busy
    page.close()
    deadline = time.monotonic() + 60
    while TRAINING.busy and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not TRAINING.busy  # 200 epochs would have held it for minutes


# -- many images: a zip in Classify and in Compare ------------------------------------------------


def digits_zip(path: Path, per_class: int = 4) -> Path:
    """Real MNIST digits 0-2 in class folders named for the starters' classes, and a corrupt PNG among them."""
    from resnet_hub.data import mnist_sample

    sample = mnist_sample(limit_per_class=per_class)
    with zipfile.ZipFile(path, "w") as archive:
        for i, (image, target) in enumerate(zip(sample.images, sample.targets)):
            if target <= 2:
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                archive.writestr(f"digits/{target}/{i:03d}.png", buffer.getvalue())
        archive.writestr("digits/1/broken.png", b"\x89PNG\r\n\x1a\n cut short")
    return path


def open_section(page, accordion: str, upload: str, data: Path) -> None:
    page.locator(f"{accordion} button").first.click()
    page.locator(f"{upload} input[type=file]").set_input_files(str(data))
    page.wait_for_function(f"() => !document.querySelector('{upload} input[type=file]')")


def test_a_zip_in_classify_streams_a_table_a_verdict_and_a_csv_download(page, artifacts, running_app, tmp_path):
    data = digits_zip(tmp_path / "digits.zip")
    open_tab(page, "Classify")
    assert "50 MB per file" in page.locator("#batch").inner_text()  # the upload limit, where the zip is asked for
    open_section(page, "#batch", "#batch-files", data)
    page.locator("#batch-run").click()
    page.wait_for_function("() => (document.querySelector('#batch-progress')?.innerText ?? '').includes('Done')",
                           timeout=TRAIN_TIMEOUT_MS)
    page.wait_for_function(f"() => document.querySelectorAll('#batch-table {BODY_ROWS}').length === 13")
    shoot(page, artifacts, "tab-classify-batch-done")
    rows = page.locator("#batch-table").evaluate(READ_TABLE)
    assert len(rows) == 13 and "13 of 13 images answered" in page.locator("#batch-progress").inner_text()
    broken = [r for r in rows if r[0] == "digits/1/broken.png"]
    assert len(broken) == 1 and broken[0][-1] and not broken[0][2]  # its own row, with its error and no answer
    assert all(r[2] in "0123456789" and r[2] for r in rows if r[0] != "digits/1/broken.png")
    verdict = page.locator("#batch-verdict").inner_text()
    assert "Accuracy" in verdict and "3 folders name a class: 0, 1, 2" in verdict
    page.wait_for_function(f"() => document.querySelectorAll('#batch-confusion {BODY_ROWS}').length >= 3")
    link = page.locator("#batch-download a").first
    text = page.request.get(link.get_attribute("href")).text()
    assert text.splitlines()[0] == "file,folder,top-1,confidence,top-k,error" and len(text.splitlines()) == 14


def test_a_labelled_zip_in_compare_draws_each_model_at_its_accuracy_and_time(page, artifacts, tmp_path):
    data = digits_zip(tmp_path / "digits.zip")
    open_tab(page, "Compare")
    assert "50 MB per file" in page.locator("#compare-set").inner_text()
    open_section(page, "#compare-set", "#compare-set-files", data)
    page.locator("#compare-set-run").click()
    page.wait_for_function("() => (document.querySelector('#compare-set-progress')?.innerText ?? '').includes('Done')",
                           timeout=TRAIN_TIMEOUT_MS)
    page.locator("#compare-set-chart svg .mark-symbol.role-mark path").first.wait_for()
    shoot(page, artifacts, "tab-compare-set-done")
    rows = page.locator("#compare-set-table").evaluate(READ_TABLE)
    assert [r[0] for r in rows] == ["ResNet-18 (starter digits)", "ResNet-50 (starter digits)"]
    summary = page.locator("#compare-set-summary").inner_text()
    assert "agree on" in summary and "images/s" in summary
    points = page.locator("#compare-set-chart svg .mark-symbol.role-mark path").evaluate_all(
        "ps => ps.map(p => ({x: (p.getBoundingClientRect().left + p.getBoundingClientRect().right) / 2,"
        " y: (p.getBoundingClientRect().top + p.getBoundingClientRect().bottom) / 2}))")
    assert len(points) == 2
    chart = axes(page, "#compare-set-chart")
    accuracies = sorted(float(r[1]) for r in rows)
    drawn = sorted(value_at(chart["y"], p["y"]) for p in points)
    assert drawn == pytest.approx(accuracies, abs=0.03)
    times = sorted(float(r[4]) for r in rows)  # each point at its model's ms per image, too
    span = times[-1] - times[0] or 1.0
    assert sorted(value_at(chart["x"], p["x"]) for p in points) == pytest.approx(times, abs=0.05 * span + 0.1)


def half_noise_zip(path: Path, per_class: int = 100) -> Path:
    """Reddish and bluish squares, a third of each folder grey noise: answers from sure to coin-toss, so the
    reliability diagram has bins across the range (and 40 validation images, enough to fit a temperature)."""
    import numpy as np

    rng = np.random.default_rng(2)
    with zipfile.ZipFile(path, "w") as z:
        for name, colour in {"red": (220, 30, 30), "blue": (30, 30, 220)}.items():
            for i in range(per_class):
                pixels = (rng.integers(60, 200, (32, 32, 3)) if i % 3 == 0 else
                          np.clip(np.array(colour) + rng.integers(-40, 40, (32, 32, 3)), 0, 255))
                buffer = io.BytesIO()
                Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
                z.writestr(f"{name}/{i:03d}.png", buffer.getvalue())
    return path


def test_the_finetune_results_draw_the_reliability_diagram_and_the_not_sure_thresholds(page, artifacts, tmp_path):
    from resnet_hub.ui.charts import RELIABILITY_SERIES

    train_in_the_browser(page, artifacts, half_noise_zip(tmp_path / "half-noise.zip"), epochs=1)
    page.wait_for_function("() => /before, [\\d.]+ after/.test("
                           "document.querySelector('#finetune-calibration')?.innerText ?? '')", timeout=TIMEOUT_MS)
    text = page.locator("#finetune-calibration").inner_text()
    before, after = map(float, re.search(r"([\d.]+) before, ([\d.]+) after", text).groups())
    assert 0 <= before <= 1 and 0 <= after <= 1 and "temperature" in text, text
    page.wait_for_function("() => document.querySelectorAll('#reliability-plot svg .mark-line path').length >= 3",
                           timeout=TIMEOUT_MS)
    assert legend_entries(page, "#reliability-plot") == list(RELIABILITY_SERIES)
    lines = [line for line in drawn_lines(page, "#reliability-plot") if line["stroke"] not in ("", "none")]
    # the diagonal, and at least one of before/after across two bins or more
    assert len(lines) >= 2 and all(line["points"] >= 2 for line in lines[:1]), lines
    x_ticks = labels(axes(page, "#reliability-plot")["x"])
    assert x_ticks[0] in ("0", "0.0") and x_ticks[-1] in ("1", "1.0"), x_ticks
    rows = page.locator("#finetune-thresholds").evaluate(READ_TABLE)
    assert [r[0] for r in rows] == ["0.50", "0.60", "0.70", "0.80", "0.90", "0.95"], rows
    assert all(re.fullmatch(r"[\d.]+% \(\d+\)", r[1]) for r in rows), rows
    shoot(page, artifacts, "tab-fine-tune-calibration")
