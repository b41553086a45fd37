"""The app as a Space runs it: its own process with the variables a Space sets, many visitors at once.

Each visitor's fine-tuned models are theirs: two browser contexts (two visitors, each with its own
localStorage, so its own gr.BrowserState id) may both name a model ``my-pets``; the second can neither
see, pick, continue from, download nor push the first's. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import httpx
import pytest
from PIL import Image

from .test_app import png_bytes
from .test_browser import wait_for_page_load

CHROMIUM = Path("/usr/bin/chromium")
TRAIN_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    from .app_harness import space_app

    with space_app(tmp_path_factory.mktemp("space")) as served:
        yield served


def classes_zip(path: Path, colours: dict[str, tuple[int, int, int]], per_class: int = 20) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, (r, g, b) in colours.items():
            for i in range(per_class):
                shade = (max(0, r - 3 * i % 40), min(255, g + 2 * i % 30), max(0, b - 3 * i % 40))
                archive.writestr(f"{name}/{i:03d}.png", png_bytes(Image.new("RGB", (32, 32), shade)))
    return path


def test_space_mode_starts_and_serves_with_the_variables_a_space_sets(space):
    config = httpx.get(f"{space.url}config", timeout=30).json()
    kinds = {c["type"] for c in config["components"]}
    buttons = {c["props"].get("value") for c in config["components"] if c["type"] == "button"}
    assert "Sign in with Hugging Face" in buttons and "browserstate" in kinds
    texts = " ".join(str(c["props"].get("value")) for c in config["components"] if c["type"] == "markdown")
    assert "deleted 24 hours after it was trained" in texts
    # Gradio's real OAuth routes (not its local mock, which would log in as this machine's token at once):
    # offline here, the route cannot reach huggingface.co, but it never redirects to a mocked callback.
    login = httpx.get(f"{space.url}login/huggingface", timeout=30, follow_redirects=False)
    assert "/login/callback" not in login.headers.get("location", "")


# -- two visitors in a real browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package to run the browser tests")
    playwright_api = pytest.importorskip("playwright.sync_api")
    from .test_browser import FLAGS

    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def visit(chromium, space):
    """A new visitor: a fresh browser context (its own localStorage) on the app."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto(space.url, wait_until="domcontentloaded")
    wait_for_page_load(page)
    page.wait_for_function("() => document.querySelector('#classify-model input') !== null")
    return context, page


def train(page, data: Path, name: str) -> str:
    from .test_browser import open_tab

    open_tab(page, "Fine-tune")
    upload = page.locator("#finetune-zip input[type=file]")
    if upload.count():  # else this zip is still there from the last try
        upload.set_input_files(str(data))
        page.wait_for_function("() => !document.querySelector('#finetune-zip input[type=file]')")
    page.locator("#finetune-epochs input").fill("1")
    page.locator("#finetune-name input, #finetune-name textarea").first.fill(name)
    page.locator("#finetune-start").click()
    page.wait_for_function("() => (document.querySelector('#finetune-status')?.innerText ?? '').includes('Saved as')",
                           timeout=TRAIN_TIMEOUT_MS)
    page.wait_for_function("() => !document.querySelector('#finetune-start').disabled")
    return page.locator("#finetune-status").inner_text()


def download_labels(page) -> list[str]:
    href = page.locator("#finetune-download a").first.get_attribute("href")
    archive = zipfile.ZipFile(io.BytesIO(page.request.get(href).body()))
    return json.loads(next(archive.read(n) for n in archive.namelist() if n.endswith("config.json")))["labels"]


def refused(page, click, message: str) -> None:
    """Do ``click``; an error toast with ``message`` appears (and is closed again)."""
    from .test_browser import toast_texts

    page.evaluate("() => document.querySelectorAll('[data-testid=toast-close]').forEach(b => b.click())")
    click()
    page.get_by_test_id("toast-text").first.wait_for()
    page.wait_for_function(
        f"() => [...document.querySelectorAll('[data-testid=toast-text]')].some(t => t.innerText.includes({message!r}))")
    assert any(message in t for t in toast_texts(page)), toast_texts(page)


def type_model(page, selector: str, value: str) -> None:
    page.locator(f"{selector} input").fill(value)
    page.keyboard.press("Enter")


def classify_labels(page, model: str, example: str) -> set[str]:
    from .test_browser import open_tab, pick_example

    open_tab(page, "Classify")
    type_model(page, "#classify-model", model)
    pick_example(page, example)
    page.get_by_role("button", name="Classify", exact=True).click()
    page.wait_for_function(f"() => (document.querySelector('#classify-info')?.innerText ?? '').includes({model.removeprefix('local:')!r})")
    return set(page.locator("#classify-label").inner_text().split())


@pytest.mark.browser
def test_a_second_visitor_can_neither_see_pick_continue_download_nor_push_the_firsts_model(
        chromium, space, tmp_path):
    from .test_browser import ARTIFACTS, chooser_options, open_tab, pick_example

    ARTIFACTS.mkdir(exist_ok=True)
    alice_ctx, alice = visit(chromium, space)
    bob_ctx, bob = visit(chromium, space)
    try:
        alice_zip = classes_zip(tmp_path / "alice-holiday.zip", {"red": (220, 30, 30), "blue": (30, 30, 220)})
        assert "Saved as my-pets" in train(alice, alice_zip, "my-pets")
        alice.screenshot(path=str(ARTIFACTS / "space-alice-trained-my-pets.png"), full_page=True)
        alice_download = download_labels(alice)
        assert sorted(alice_download) == ["blue", "red"]

        # Bob: not listed, and typed by name it is not his to classify with, continue from, or push.
        assert "my-pets (fine-tuned here)" not in chooser_options(bob, "#classify-model")
        open_tab(bob, "Classify")
        type_model(bob, "#classify-model", "local:my-pets")
        pick_example(bob, "chelsea")
        refused(bob, lambda: bob.get_by_role("button", name="Classify", exact=True).click(),
                "my-pets is not one of your models")
        bob.screenshot(path=str(ARTIFACTS / "space-bob-refused-alices-model.png"), full_page=True)

        open_tab(bob, "Fine-tune")
        bob_zip = classes_zip(tmp_path / "bob-garden.zip", {"green": (30, 200, 30), "yellow": (230, 220, 30)})
        bob.locator("#finetune-zip input[type=file]").set_input_files(str(bob_zip))
        bob.wait_for_function("() => !document.querySelector('#finetune-zip input[type=file]')")
        type_model(bob, "#finetune-base", "local:my-pets")
        bob.locator("#finetune-epochs input").fill("1")
        refused(bob, lambda: bob.locator("#finetune-start").click(), "my-pets is not one of your models")

        bob.get_by_text("Push to the Hugging Face Hub").click()
        type_model(bob, "#push-model", "local:my-pets")
        refused(bob, lambda: bob.get_by_role("button", name="Push", exact=True).click(),
                "my-pets is not one of your models")
        assert "my-pets (fine-tuned here)" not in chooser_options(bob, "#push-model")

        # Bob names his own model my-pets too: it is his, and Alice's stays hers.
        type_model(bob, "#finetune-base", "resnet18")
        assert "Saved as my-pets" in train(bob, bob_zip, "my-pets")
        bob.screenshot(path=str(ARTIFACTS / "space-bob-trained-his-own-my-pets.png"), full_page=True)
        assert sorted(download_labels(bob)) == ["green", "yellow"]
        assert sorted(download_labels(alice)) == ["blue", "red"]  # her download was not replaced by his
        stored = sorted(p.parent.name for p in (space.home / "models" / "visitors").glob("*/my-pets"))
        assert len(stored) == 2 and all(name.startswith("browser-") for name in stored)

        assert classify_labels(bob, "local:my-pets", "mnist-digit-7") & {"green", "yellow"}
        assert classify_labels(alice, "local:my-pets", "chelsea") & {"red", "blue"}

        # A reload keeps who Alice is (the id in her browser): her model is still listed for her only.
        alice.reload(wait_until="domcontentloaded")
        wait_for_page_load(alice)
        alice.wait_for_timeout(1000)
        assert "my-pets (fine-tuned here)" in chooser_options(alice, "#classify-model")
        alice.screenshot(path=str(ARTIFACTS / "space-alice-after-reload.png"), full_page=True)
    finally:
        alice_ctx.close()
        bob_ctx.close()


def test_api_clients_own_what_they_train_in_their_session(space, tmp_path):
    """Without a browser id, a gradio_client session owns its models: another client cannot use them."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from .test_app import classify, example, finetune_args

    alice, bob = Client(space.url, verbose=False), Client(space.url, verbose=False)
    data = classes_zip(tmp_path / "api.zip", {"red": (220, 30, 30), "blue": (30, 30, 220)}, per_class=8)
    status = alice.predict(*finetune_args(data, "api-pets"), api_name="/finetune")[0]
    assert "Saved as `api-pets`" in status

    label, _, _ = classify(alice, example("photo"), "local:api-pets", top_k=2)
    assert {c["label"] for c in label["confidences"]} == {"red", "blue"}
    with pytest.raises(AppError, match="api-pets is not one of your models"):
        classify(bob, example("photo"), "local:api-pets", top_k=2)
    with pytest.raises(AppError, match="api-pets is not one of your models"):
        bob.predict("local:api-pets", "bob/pets", "", False, api_name="/push")


# -- who may stop what -----------------------------------------------------------------------------


def test_a_visitor_cannot_stop_another_visitors_live_lab_run_and_its_owner_can(space):
    """Two API sessions are two visitors: Bob's Stop leaves Alice's live run going; Alice's own Stop ends it."""
    from gradio_client import Client

    from .test_app import wait_for

    alice, bob = Client(space.url, verbose=False), Client(space.url, verbose=False)
    run = alice.submit("degradation", api_name="/why_residual")
    assert wait_for(lambda: any("%" in str(o[-1]) for o in run.outputs()), 180), run.outputs()
    bob.predict(api_name="/stop_why_residual")
    seen = len(run.outputs())
    assert wait_for(lambda: len(run.outputs()) > seen + 1, 120)  # it went on: more progress after Bob's Stop
    assert not run.done() and "Stopped" not in str(run.outputs()[-1][-1])
    alice.predict(api_name="/stop_why_residual")
    assert "**Stopped**" in run.result(timeout=120)[-1]


def test_a_visitor_cannot_stop_or_cancel_another_visitors_fine_tune_and_its_owner_can(space):
    from gradio_client import Client

    from .test_app import finetune_args, wait_for

    alice, bob = Client(space.url, verbose=False), Client(space.url, verbose=False)
    run = alice.submit(*finetune_args(None, "alice-digits", epochs=20, use_mnist=True), api_name="/finetune")
    assert wait_for(lambda: any("step" in str(o[0]) for o in run.outputs()), 240), run.outputs()
    bob.predict(api_name="/stop_finetune")
    bob.predict(api_name="/cancel_finetune")
    seen = len(run.outputs())
    assert wait_for(lambda: len(run.outputs()) > seen + 1, 120)
    assert not run.done()
    alice.predict(api_name="/stop_finetune")
    status = run.result(timeout=240)[0]
    assert "Stopped on request at epoch" in status and "Saved as `alice-digits`" in status
