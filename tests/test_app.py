"""The app end to end: gradio_client against the real app.py served on loopback.

Offline (no Hub), so the app serves its starter digit models; the session fixture
pre-builds tiny ones. Labels are therefore digits, and the tests check what the
app answers and how, not how accurate the tiny models are.
"""

from __future__ import annotations

import io
import random
import re
import struct
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageDraw

from resnet_hub.ui.app import BANNER_BEFORE_LOAD, QUEUE_SIZE
from resnet_hub.ui.charts import accuracy_curves, lab_gradient_curves
from resnet_hub.ui.common import HEATMAP_MIN_SIDE
from resnet_hub.ui.lab import lab_cached

ARCHS = ["resnet18", "resnet50"]
DIGIT_LABELS = {str(d) for d in range(10)}
ENDPOINTS = {"/classify", "/compare", "/finetune", "/stop_finetune", "/cancel_finetune", "/finetune_mistakes", "/push",
             "/why_residual", "/stop_why_residual", "/classify_batch", "/classify_batch_stop",
             "/classify_batch_mistakes", "/compare_set", "/compare_set_stop", "/finetune_fixed", "/inspect",
             "/stop_inspect", "/inspect_findings", "/inspect_keep", "/inspect_drop", "/inspect_move",
             "/inspect_drop_copies", "/inspect_drop_label_issues", "/inspect_fixed_zip"}


# --- inputs ----------------------------------------------------------------------------------


def example(kind: str) -> Path:
    """One of the app's own examples: 'photo' (scikit-image's cat) or 'digit' (a real MNIST digit)."""
    from resnet_hub.examples import example_images

    prefix = {"photo": "chelsea", "digit": "mnist-digit-"}[kind]
    return next(p for p in example_images() if p.name.startswith(prefix))


def drawn_one(path: Path) -> Path:
    """A '1' drawn the way the Sketchpad sends it: a thick white stroke on a black 280x280 canvas."""
    canvas = Image.new("RGB", (280, 280), "black")
    ImageDraw.Draw(canvas).line([(140, 50), (140, 230)], fill="white", width=24)
    canvas.save(path)
    return path


def sketch(png: Path | None) -> dict:
    return {"background": None, "layers": [], "composite": handle_file(str(png)) if png else None}


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb's header, without its bulk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def noise(width: int, height: int) -> Image.Image:
    """A photo-like image: incompressible, so cutting its file short cuts its pixel data short."""
    return Image.frombytes("RGB", (width, height), random.Random(0).randbytes(width * height * 3))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def colour_zip(path: Path, per_class: int = 12, size: int = 32) -> Path:
    """Two classes a model can tell apart: reddish and bluish squares, a little different each."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, (r, g, b) in {"red": (220, 30, 30), "blue": (30, 30, 220)}.items():
            for i in range(per_class):
                shade = (r - 4 * i % 60, g + 3 * i % 40, b - 4 * i % 60)
                archive.writestr(f"{name}/{i:03d}.png", png_bytes(Image.new("RGB", (size, size), shade)))
    return path


# --- calls -----------------------------------------------------------------------------------


def classify(client: Client, image: Path | None, model: str = "resnet18", top_k: int = 5, drawn: Path | None = None):
    return client.predict(handle_file(str(image)) if image else None, sketch(drawn) if drawn else None, model, top_k,
                          api_name="/classify")


def finetune_args(data: Path | None, name: str, *, base: str = "resnet18", epochs: int = 1, use_mnist: bool = False):
    return (handle_file(str(data)) if data else None, use_mnist, base, epochs, 0.05, -1, name, 0)


def assert_still_serves(client: Client) -> None:
    label, _, _ = classify(client, example("digit"))
    assert label["label"] in DIGIT_LABELS


# --- the page --------------------------------------------------------------------------------


def test_banner_says_the_imagenet_weights_are_unreachable_and_starters_serve(running_app):
    banner = running_app.module.ctx.registry.banner
    assert running_app.module.ctx.registry.uses_starters
    assert "Offline: the ImageNet weights are not reachable" in banner and "starter digit classifiers" in banner

    # The page is built before the Hub check: it says which weights serve once it loads (the browser tests read it).
    config = httpx.get(running_app.url + "config", timeout=10).json()
    served = [c["props"].get("value") for c in config["components"] if c["props"].get("elem_id") == "weights-banner"]
    assert served == [BANNER_BEFORE_LOAD]
    assert httpx.get(running_app.url, timeout=10).status_code == 200


def test_server_side_rendering_is_off_even_where_the_environment_asks_for_it(running_app, monkeypatch):
    monkeypatch.setenv("GRADIO_SSR_MODE", "true")  # what a Space sets
    assert running_app.module.launch_options()["ssr_mode"] is False
    assert running_app.module.demo.ssr_mode is False


def test_every_event_is_a_named_api_endpoint(running_app):
    api = running_app.client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == ENDPOINTS
    assert api["unnamed_endpoints"] == {}


def test_the_queue_is_bounded(running_app):
    app = running_app.module
    assert app.demo._queue.max_size == QUEUE_SIZE == 64


# --- classify --------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["photo", "digit"])
def test_classify_an_example_gives_top_k_a_timing_and_a_heatmap(running_app, kind, arch):
    label, timing, heatmap = classify(running_app.client, example(kind), arch, top_k=5)

    confidences = label["confidences"]
    assert len(confidences) == 5
    assert label["label"] == confidences[0]["label"] and {c["label"] for c in confidences} <= DIGIT_LABELS
    assert sum(c["confidence"] for c in confidences) <= 1 + 1e-6
    assert [c["confidence"] for c in confidences] == sorted((c["confidence"] for c in confidences), reverse=True)
    assert " ms for this call" in timing
    assert re.search(r"engine: (torch|openvino) (fp32|bf16|int8)", timing), timing  # which engine answered
    assert f"{arch.replace('resnet', 'ResNet-')} (starter digits)" in timing
    assert str(running_app.home) not in timing  # a store model is named, its server path is not shown
    with Image.open(heatmap) as overlay:
        assert min(overlay.size) >= HEATMAP_MIN_SIDE  # the starters see 32 px: shown larger


def test_classify_a_digit_drawn_on_the_sketchpad(running_app, tmp_path):
    label, timing, _ = classify(running_app.client, None, "resnet18", top_k=3, drawn=drawn_one(tmp_path / "one.png"))

    assert label["label"] in DIGIT_LABELS and len(label["confidences"]) == 3
    assert "centred and scaled the way MNIST digits are" in timing


def test_an_uploaded_image_wins_over_the_sketch(running_app, tmp_path):
    with_sketch, _, _ = classify(running_app.client, example("digit"), drawn=drawn_one(tmp_path / "one.png"))
    alone, _, _ = classify(running_app.client, example("digit"))
    assert with_sketch == alone


# --- compare ---------------------------------------------------------------------------------


def test_compare_two_models_side_by_side(running_app):
    # The evidence sentence names the chosen engine: wait for the choices the app makes in the background.
    for arch in ("resnet18", "resnet50"):
        assert running_app.module.ctx.registry.predictor(arch).wait_for_engine(timeout=300)
    label_a, label_b, verdict, table, chart = running_app.client.predict(
        handle_file(str(example("digit"))), None, "resnet18", "resnet50", api_name="/compare"
    )

    for label in (label_a, label_b):
        assert label["label"] in DIGIT_LABELS and len(label["confidences"]) == 5
    assert ("agrees" in verdict) == (label_a["label"] == label_b["label"])
    assert "agrees" in verdict or "differs" in verdict
    models = ["ResNet-18 (starter digits)", "ResNet-50 (starter digits)"]
    assert table["headers"] == ["measure", *models]  # one column per model: it fits any screen
    cols = {m: {row[0]: row[1 + i] for row in table["data"]} for i, m in enumerate(models)}
    number = lambda text: float(str(text).replace(",", ""))  # noqa: E731
    for m in models:
        assert number(cols[m]["GMACs"]) > 0 and number(cols[m]["parameters (M)"]) > 0
        assert 0 < number(cols[m]["p10 (ms)"]) <= number(cols[m]["median (ms)"]) <= number(cols[m]["p90 (ms)"])
        assert cols[m]["runs"] == "30"
        # which engine served, and the evidence it was chosen on (checked against fp32, then timed here)
        assert cols[m]["engine"].split()[0] in ("torch", "openvino")
        assert f"**{m}** runs on {cols[m]['engine']}, the fastest of" in verdict and "checked paths" in verdict
    assert number(cols[models[0]]["parameters (M)"]) < number(cols[models[1]]["parameters (M)"])
    # One bar per model and statistic (never stacked), each the table's value.
    assert chart["columns"] == ["bar", "model", "ms"]
    bars = {(bar, model): ms for bar, model, ms in chart["data"]}
    assert bars == {(f"{ab} {stat}", f"model {ab}"): number(cols[m][f"{stat} (ms)"])
                    for ab, m in zip("AB", models) for stat in ("p10", "median", "p90")}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["photo", "digit"])
def test_the_app_and_the_cli_give_the_same_top_5(running_app, capsys, kind, arch):
    """One code path: the same model, image and preprocessing (digits centred the MNIST way) in both."""
    import json

    from resnet_hub.__main__ import main

    # The same engine too: the app's first answers come from torch fp32 while it chooses in the background.
    assert running_app.module.ctx.registry.predictor(arch).wait_for_engine(timeout=300)
    label, _, _ = classify(running_app.client, example(kind), arch, top_k=5)
    capsys.readouterr()
    assert main(["classify", str(example(kind)), "--model", arch, "--top-k", "5", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)["results"][str(example(kind))]
    app = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert list(app) == list(cli)
    assert list(app.values()) == pytest.approx(list(cli.values()), abs=1e-6)


# --- fine-tune -------------------------------------------------------------------------------


def test_finetune_on_an_uploaded_zip_adds_a_model_to_every_chooser(running_app, tmp_path):
    app, client = running_app.module, running_app.client
    job = client.submit(*finetune_args(colour_zip(tmp_path / "colours.zip"), "test-colors"), api_name="/finetune")
    status, loss, accuracy, _, download, *choosers = job.result(timeout=240)

    assert "Validation accuracy" in status and "test-colors" in status
    assert {row[1] for row in loss["data"]} == {"train loss"}
    assert {row[1] for row in accuracy["data"]} == {"train accuracy", "validation accuracy"}
    assert all(0 <= row[2] <= 1 for row in accuracy["data"] if row[2] is not None)
    assert ("test-colors (fine-tuned here)", "local:test-colors") in app.ctx.registry.choices()
    assert len(choosers) == 5  # Classify, Compare A and B, Fine-tune base, Push
    for chooser in choosers:
        assert ["test-colors (fine-tuned here)", "local:test-colors"] in chooser["choices"]
    weights, onnx = download
    with zipfile.ZipFile(weights) as archive:
        assert {Path(n).name for n in archive.namelist()} >= {"model.safetensors", "config.json", "README.md"}
    assert onnx.endswith("test-colors.onnx") and "ONNX (opset 17): same top-1 as PyTorch" in status

    label, timing, _ = classify(client, example("photo"), "local:test-colors", top_k=2)
    assert {c["label"] for c in label["confidences"]} == {"red", "blue"}
    assert "test-colors" in timing and str(running_app.home) not in timing


def test_stop_with_no_run_in_progress_only_warns(running_app):
    assert running_app.client.predict(api_name="/stop_finetune") == ()


def test_a_second_finetune_waits_in_line_with_its_place_shown_then_runs(running_app, tmp_path, monkeypatch):
    """One training slot: a second visitor's run says how many trainings are ahead of it, starts by itself
    when the first ends, and the two training runs, timed inside the app, never overlap."""
    from resnet_hub.services import jobs as service

    runs, lock, real_finetune = [], threading.Lock(), service.finetune

    def timed_finetune(*args, **kwargs):
        start = time.monotonic()
        try:
            return real_finetune(*args, **kwargs)
        finally:
            with lock:
                runs.append((start, time.monotonic()))

    monkeypatch.setattr(service, "finetune", timed_finetune)
    data = colour_zip(tmp_path / "bigger.zip", per_class=40)
    first = running_app.client.submit(*finetune_args(data, "first-run", epochs=2), api_name="/finetune")
    assert wait_for(lambda: running_app.module.ctx.jobs.slot.busy, 60)
    second = Client(running_app.url, verbose=False).submit(*finetune_args(data, "second-run"), api_name="/finetune")

    assert wait_for(lambda: any("Waiting in line: 1 training ahead of yours" in str(o[0]) for o in second.outputs()), 60)
    assert not first.done()
    first_status = first.result(timeout=240)[0]
    second_status = second.result(timeout=240)[0]

    assert "Validation accuracy" in first_status and "Validation accuracy" in second_status
    assert len(runs) == 2
    (_, end_first), (start_second, _) = sorted(runs)
    assert end_first <= start_second


def test_an_oversize_sketch_is_refused_before_it_is_decoded(running_app, tmp_path, monkeypatch):
    """An API caller may send any image as the 'sketch': its header is read, its pixels never."""
    from PIL import ImageFile

    decoded, real_load = [], ImageFile.ImageFile.load

    def load(image):
        decoded.append(image.size)
        return real_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    # 144 MP: over Pillow's own limit but under twice it, where Pillow only warns: the sketch's limit refuses it
    huge = write(tmp_path / "huge-sketch.png", png_declaring(12_000, 12_000))
    with pytest.raises(AppError) as refused:
        classify(running_app.client, None, "resnet18", drawn=huge)
    assert "the sketch: 12000x12000 = 144,000,000 pixels is over the limit of 16,777,216" in str(refused.value)
    assert (12_000, 12_000) not in decoded
    assert_still_serves(running_app.client)


def test_a_forged_host_header_from_another_machine_gains_no_token(running_app, monkeypatch):
    """Gradio 6.31 lends the machine's saved Hugging Face token to a 'direct local request'. With SSR off
    (every launch path), the peer Gradio sees is the real client, so a LAN client forging Host: localhost
    is not local; only a loopback peer with a loopback Host is."""
    from gradio import history
    from starlette.requests import Request

    monkeypatch.setenv("HF_TOKEN", "hf_this_machines_saved_token")
    monkeypatch.delenv("SYSTEM", raising=False)

    def request(client_host: str, host: str = "localhost:7860") -> Request:
        return Request({"type": "http", "method": "GET", "path": "/", "headers": [(b"host", host.encode())],
                        "client": (client_host, 50123), "server": ("127.0.0.1", 7860), "scheme": "http",
                        "query_string": b"", "session": {}})

    assert history.resolve_token(request("192.168.1.77")) is None  # a LAN client that forged Host: localhost
    assert history.resolve_token(request("127.0.0.1", host="evil.example")) is None  # e.g. a share tunnel
    assert history.resolve_token(request("127.0.0.1")) == "hf_this_machines_saved_token"  # the check is live
    # ...and no SSR Node proxy stands in front of the server, where every client would come from loopback:
    monkeypatch.setenv("GRADIO_SSR_MODE", "true")
    assert running_app.module.launch_options()["ssr_mode"] is False and running_app.module.demo.ssr_mode is False


def wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


# --- bad input: each answered with a clear error, and the app keeps serving ------------------


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def hostile_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(3):
            archive.writestr(f"cats/{i}.png", png_bytes(Image.new("RGB", (8, 8), "white")))
            archive.writestr(f"dogs/{i}.png", png_bytes(Image.new("RGB", (8, 8), "black")))
        archive.writestr("../evil.png", png_bytes(Image.new("RGB", (8, 8), "red")))
    return path


BAD_INPUTS = {
    "no image": (lambda c, d: classify(c, None), "no image"),
    "an empty sketch": (lambda c, d: c.predict(None, sketch(None), "resnet18", 5, api_name="/classify"), "no image"),
    "a truncated png": (
        lambda c, d: classify(c, write(d / "cut.png", png_bytes(noise(64, 64))[:2000])),
        "truncated",
    ),
    "a text file named .png": (
        lambda c, d: classify(c, write(d / "notes.png", b"just some text, not a picture\n" * 4)),
        "is not an image Pillow can read safely",
    ),
    "a 50000x50000 png header": (
        lambda c, d: classify(c, write(d / "bomb.png", png_declaring(50_000, 50_000))),
        "decompression bomb",
    ),
    "an unknown repo id": (
        lambda c, d: classify(c, example("digit"), "nobody/does-not-exist-xyz"),
        "is not in the local Hugging Face cache and the Hub cannot be reached",
    ),
    "a server path as the model": (lambda c, d: classify(c, example("digit"), "/etc"), "is not a model here"),
    "top-k of 0": (lambda c, d: classify(c, example("digit"), top_k=0), "less than minimum value 1"),
    "a compare with no image": (
        lambda c, d: c.predict(None, None, "resnet18", "resnet50", api_name="/compare"),
        "no image",
    ),
    "a finetune with no data": (lambda c, d: c.predict(*finetune_args(None, "x"), api_name="/finetune"), "no data"),
    "a finetune on a non-zip": (
        lambda c, d: c.predict(*finetune_args(write(d / "data.zip", b"not a zip at all"), "x"), api_name="/finetune"),
        "is not a readable zip file",
    ),
    "a finetune on a zip reaching outside itself": (
        lambda c, d: c.predict(*finetune_args(hostile_zip(d / "evil.zip"), "x"), api_name="/finetune"),
        "points outside the archive with '..'",
    ),
    "a push without a token": (
        lambda c, d: c.predict("local:starter-resnet18-mnist", "me/digits", "", api_name="/push"),
        "log in with Hugging Face (or paste a write token locally)",
    ),
    "a push of a model not fine-tuned here": (
        lambda c, d: c.predict("resnet18", "me/digits", "hf_not_a_real_token", api_name="/push"),
        "choose a model fine-tuned here",
    ),
    "a push to a malformed repo id": (
        lambda c, d: c.predict("local:starter-resnet18-mnist", "not a repo id!", "hf_not_a_real_token",
                               api_name="/push"),
        "is not a Hub repo id",
    ),
}


def test_a_one_pixel_image_is_answered_with_a_notice_that_it_shows_nothing(running_app, tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    label, timing, _ = classify(running_app.client, tmp_path / "dot.png", "resnet18", top_k=3)

    assert label["label"] in DIGIT_LABELS  # answered, and said first, loudly, what the answer is worth
    assert timing.startswith("**This image shows nothing to recognise: it is 1x1 px, so any answer is a guess.**")


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_answered_with_a_clear_error_and_the_app_keeps_serving(running_app, tmp_path, case):
    call, message = BAD_INPUTS[case]
    with pytest.raises(AppError) as error:
        call(running_app.client, tmp_path)

    assert message in str(error.value)
    assert str(running_app.uploads) not in str(error.value)  # names the upload, not where the server keeps it
    assert_still_serves(running_app.client)


def test_a_live_lab_run_waits_in_line_behind_a_training_and_then_runs(running_app, monkeypatch):
    """The lab's live runs take the same one training slot as fine-tunes."""
    from resnet_hub.lab import GradientSettings
    from resnet_hub.training_slot import TRAINING

    monkeypatch.setattr(running_app.module.ctx.lab, "live_settings",
                        {"gradients": GradientSettings(depths=(8,), width=2, batch_size=8, seed=0)})
    fine_tune = TRAINING.enter("a fine-tune")  # holds the slot
    try:
        run = running_app.client.submit("gradients", api_name="/why_residual")
        assert wait_for(lambda: any("Waiting in line: 1 training ahead" in str(o[-1]) for o in run.outputs()), 60)
        assert not run.done()
    finally:
        TRAINING.leave(fine_tune)
    assert "**Done**" in run.result(timeout=240)[-1]


def _loadtest():
    import importlib.util

    spec = importlib.util.spec_from_file_location("loadtest", Path(__file__).parent.parent / "scripts" / "loadtest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["loadtest"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("client", ["http", "gradio_client"])
def test_the_load_script_gets_every_distinct_photo_answered(running_app, client, capsys):
    code = _loadtest().main(["--url", running_app.url, "--clients", "3", "--requests", "2", "--distinct-photos",
                             "--client", client])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "answered                 6" in out and "failed                   0" in out
    assert_still_serves(running_app.client)


def test_the_load_script_counts_an_answer_with_an_error_as_failed(running_app, capsys):
    code = _loadtest().main(["--url", running_app.url, "--clients", "1", "--requests", "2", "--model", "no-such-model"])
    out = capsys.readouterr().out
    assert code == 1
    assert "failed                   2" in out and "error: ValueError: the app answered error" in out, out


def test_a_vanished_gradient_is_drawn_at_the_floor_and_coinciding_initialisations_are_one_line(running_app):
    """A gradient that underflowed to 0 was left out, so the vanishing line the lesson points at had one point and
    was not drawn; BatchNorm's two initialisations gave two lines drawn on top of each other."""
    from resnet_hub.lab import GradientNet, GradientResult, GradientSettings

    def net(family, bn, init, signals):
        return GradientNet(f"{family}-8", family, 8, bn, init, [], [], None, [], [], signals, None, 1.0, 2.3, "ok",
                           "healthy")

    result = GradientResult("gradients", GradientSettings(depths=(8,), width=2, batch_size=8, seed=0), nets=[
        net("plain", False, "naive", [0.0, 0.0, 1e-12, 1e-2]),
        net("plain", False, "kaiming", [1e-3, 1e-3, 1e-2, 1e-2]),
        net("plain", True, "naive", [10.0, 1.0, 0.1, 1e-2]),
        net("plain", True, "kaiming", [11.0, 1.0, 0.1, 1e-2]),  # within 0.1 in log10 at every block: one line
    ])
    frame = lab_gradient_curves(result)
    lines = {v: list(frame[frame["variant"] == v]["log10 gradient"]) for v in frame["variant"].unique()}
    assert lines == {
        "plain, naive (floored)": [-8.0, -8.0, -8.0, -2.0],
        "plain, kaiming": [-3.0, -3.0, -2.0, -2.0],
        "plain + BN, any init": [1.0, 0.0, -1.0, -2.0],
    }


def test_a_fresh_store_shows_the_projects_own_lab_runs_and_says_whose_they_are(running_app, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_HUB_HOME", str(tmp_path / "fresh"))
    plots_and_captions = lab_cached()
    for plot, caption in zip(plots_and_captions[::2], plots_and_captions[1::2]):
        assert plot is not None and len(plot) > 0
        assert caption.startswith("Measured by the project (shipped with the app; `python -m resnet_hub why-residual")


def test_a_curve_with_points_has_no_gap_and_a_series_without_any_still_names_its_colour(running_app):
    """A NaN placeholder for every series sat at the first training step's x, between the validation before training
    (x = 0) and after the first epoch: Vega breaks a line at a NaN, so one epoch drew two dots and no line."""
    from resnet_hub.finetune import Event

    def step(images, accuracy):
        return Event("step", images // 64, 8, 0, 1, train_accuracy=accuracy, images=images)

    history = [Event("epoch", 0, 8, 0, 1, val_accuracy=0.1), step(64, 0.2), step(128, 0.5),
               Event("epoch", 8, 8, 1, 1, val_accuracy=0.9, images=512)]
    frame = accuracy_curves(history)
    assert list(frame["series"].unique()) == ["train accuracy", "validation accuracy"]  # the colours' fixed order
    assert not frame["accuracy"].isna().any()
    validation = frame[frame["series"] == "validation accuracy"]
    assert list(zip(validation["images"], validation["accuracy"])) == [(0, 0.1), (512, 0.9)]

    # Before the first epoch ends: the validation before training, then steps; every series named from the start.
    early = accuracy_curves(history[:2])
    assert list(early["series"].unique()) == ["train accuracy", "validation accuracy"]
    first = accuracy_curves([step(64, 0.2)])
    assert list(first["series"]) == ["train accuracy", "validation accuracy"]
    assert first["accuracy"].isna().tolist() == [False, True]  # the placeholder: only where a series has no point
