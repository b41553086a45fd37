"""Fine-tuning: a short run that learns, reports each step, stops cleanly, and saves a model that loads back."""

from __future__ import annotations

import io
import json
import math
import os
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import resnet_hub
from resnet_hub import DataError, store
from resnet_hub import finetune as finetune_module
from resnet_hub import frozen as frozen_module
from resnet_hub.hardware import autocast_args
from resnet_hub.__main__ import EXIT_BAD_INPUT, EXIT_STOPPED, main
from resnet_hub.data import mnist_sample, read_zip, stratified_split
from resnet_hub.finetune import FinetuneConfig, FinetuneError, finetune, lr_at
from resnet_hub.predict import Predictor
from resnet_hub.services import starters

from .conftest import needs_gpu

REPO = Path(__file__).resolve().parent.parent
TOKEN = "hf_" + "t0k3n" * 6
TINY = dict(base="scratch:resnet18", image_size=32, batch_size=32, device="cpu", precision="fp32")
# The same tiny run through the command line: 200 digits, 160 to train on, 5 steps.
CLI_TINY = ["--data", "mnist-sample", "--limit-per-class", "20", "--base", "scratch:resnet18", "--image-size", "32",
            "--batch-size", "32", "--epochs", "1", "--lr", "0.1", "--device", "cpu", "--precision", "fp32"]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def colour_zip(path: Path, colours: dict[str, tuple[int, int, int]] = COLOURS, per_class: int = 16) -> Path:
    """One class folder per colour: 32x32 PNGs of that colour with pixel noise."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as z:
        for name, rgb in colours.items():
            for i in range(per_class):
                pixels = np.clip(np.array(rgb) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="PNG")
                z.writestr(f"{name}/{i}.png", buffer.getvalue())
    return path


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


class Recorder:
    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def steps(self) -> list:
        return [e for e in self.events if e.kind == "step"]


@pytest.fixture
def no_training(monkeypatch):
    """Replaces the training loop with one that records that it was called."""
    calls = []
    monkeypatch.setattr(finetune_module, "finetune", lambda *a, **k: calls.append(a) or pytest.fail("training ran"))
    return calls


# --- a run that learns, and what it reports ------------------------------------------------------


@pytest.fixture(scope="module")
def digits_run():
    """Three epochs from scratch on 400 real digits (320 to train on): the run most tests below read."""
    dataset = mnist_sample(limit_per_class=40)
    config = FinetuneConfig(**TINY, epochs=3, lr=0.1, seed=0)
    recorder = Recorder()
    result = finetune(dataset, config, on_event=recorder)
    return dataset, config, result, recorder


def test_a_short_run_on_digits_learns_well_over_chance(digits_run):
    _, _, result, _ = digits_run
    assert not result.stopped and result.reason == "finished"
    assert result.val_accuracy > 0.5  # chance is 0.1 for 10 classes


def test_events_run_start_then_a_validation_before_training_then_steps_and_one_epoch_report_per_epoch_then_done(
        digits_run):
    dataset, config, result, recorder = digits_run
    steps_per_epoch = math.ceil(len(stratified_split(dataset, config.val_fraction, config.seed)[0]) / config.batch_size)
    assert recorder.kinds() == ["start", "epoch"] + (["step"] * steps_per_epoch + ["epoch"]) * config.epochs + ["done"]
    assert recorder.events == result.history
    total = steps_per_epoch * config.epochs
    assert all(e.total_steps == total for e in recorder.events)
    assert [e.step for e in recorder.steps()] == list(range(1, total + 1))
    epochs = [e for e in recorder.events if e.kind == "epoch"]
    assert [e.epoch for e in epochs] == list(range(0, config.epochs + 1))  # epoch 0: where the curve starts
    assert (epochs[0].step, epochs[0].images) == (0, 0) and epochs[0].message.startswith("before training: ")
    assert all(0 <= e.val_accuracy <= 1 for e in epochs)
    assert recorder.events[-1].val_accuracy == result.val_accuracy


def test_every_step_event_reports_loss_lr_speed_and_time_left(digits_run):
    _, config, _, recorder = digits_run
    steps = recorder.steps()
    assert all(math.isfinite(e.loss) and e.loss > 0 for e in steps)
    assert all(0 < e.lr <= config.peak_lr * (1 + 1e-9) for e in steps)
    assert all(e.images_per_s > 0 and e.eta_s >= 0 for e in steps)
    assert steps[-1].eta_s == 0


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_zero():
    config = FinetuneConfig(lr=0.4, warmup_fraction=0.1)
    lrs = [lr_at(step, 100, config) for step in range(100)]
    assert lrs[:10] == pytest.approx([0.04 * (i + 1) for i in range(10)])
    assert lrs[10] == pytest.approx(0.4)
    assert lrs[55] == pytest.approx(0.2)  # halfway through the decay
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))
    assert 0 < lrs[99] < 0.001


def test_step_events_follow_the_schedule(digits_run):
    _, config, _, recorder = digits_run
    steps = recorder.steps()
    assert [e.lr for e in steps] == pytest.approx([lr_at(s, len(steps), config) for s in range(len(steps))])


def test_a_last_batch_of_one_image_is_dropped_rather_than_crashing_batchnorm():
    dataset = mnist_sample(limit_per_class=5)
    n_train = len(stratified_split(dataset, 0.2, seed=0)[0])  # batches of n - 1 leave one image over
    events = []
    result = finetune(dataset, FinetuneConfig(**{**TINY, "batch_size": n_train - 1}, epochs=1), on_event=events.append)
    assert not result.stopped and sum(e.kind == "step" for e in events) == 1


def test_base_model_names_the_hub_repo_behind_a_short_name():
    from resnet_hub.hub import hub_repo_id

    assert hub_repo_id("resnet50") == "timm/resnet50.a1_in1k" and hub_repo_id("org/name@v2") == "org/name"


@pytest.mark.parametrize("clean_epochs", [0, 1, 3])
def test_the_last_clean_epochs_train_on_unaugmented_images(tiny_digits, monkeypatch, clean_epochs):
    kinds = []
    real = finetune_module.augment_batch
    monkeypatch.setattr(finetune_module, "augment_batch", lambda x, kind, g: kinds.append(kind) or real(x, kind, g))
    finetune(tiny_digits, FinetuneConfig(**TINY, epochs=3, lr=0.1, clean_epochs=clean_epochs))
    steps = len(kinds) // 3
    assert kinds == ["digits"] * steps * (3 - clean_epochs) + ["none"] * steps * clean_epochs


def test_without_validation_every_epoch_the_run_validates_once_at_the_end(tiny_digits):
    recorder = Recorder()
    result = finetune(tiny_digits, FinetuneConfig(**TINY, epochs=2, lr=0.1, val_every_epoch=False), on_event=recorder)
    epochs = [e for e in recorder.events if e.kind == "epoch"]
    assert [e.val_accuracy for e in epochs] == [None, None]
    assert [e.message for e in epochs] == ["epoch 1 of 2 done", "epoch 2 of 2 done"]
    assert 0 <= result.val_accuracy <= 1 and recorder.events[-1].val_accuracy == result.val_accuracy
    assert np.array(result.confusion_matrix).sum() == len(stratified_split(tiny_digits, 0.2, 0)[1])


# --- convolutions as matrix products, for training on CPU ----------------------------------------


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "size"),
    [(1, 1, 0, 1), (1, 1, 0, 5), (1, 2, 0, 2), (1, 2, 0, 5), (3, 1, 1, 1), (3, 2, 1, 2), (3, 2, 1, 3), (3, 1, 1, 4),
     (7, 2, 3, 2), (7, 2, 3, 6)],
)
def test_a_convolution_as_a_matrix_product_gives_the_convolutions_values_and_gradients(
        kernel, stride, padding, size, memory_format):
    from resnet_hub.finetune import _ConvAsMatmul

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, kernel, stride=stride, padding=padding, bias=True).double()
    fast = _ConvAsMatmul(6, 5, kernel, stride=stride, padding=padding, bias=True).double()
    fast.load_state_dict(conv.state_dict())
    conv, fast = conv.to(memory_format=memory_format), fast.to(memory_format=memory_format)
    x = torch.randn(3, 6, size, size + 1, dtype=torch.double).contiguous(memory_format=memory_format).requires_grad_()
    expected, got = conv(x), fast(x)
    torch.testing.assert_close(got, expected)
    grad = torch.randn_like(expected)
    wanted = torch.autograd.grad(expected, [x, conv.weight, conv.bias], grad)
    for a, b in zip(torch.autograd.grad(got, [x, fast.weight, fast.bias], grad), wanted):
        torch.testing.assert_close(a, b)


def test_on_cpu_training_swaps_the_convolutions_and_returns_plain_ones_with_the_trained_weights(tiny_digits, monkeypatch):
    from resnet_hub.finetune import _ConvAsMatmul

    seen, before = [], {}
    real = finetune_module._train_step

    def spy(net, *args):
        seen.append({type(m) for m in net.modules() if isinstance(m, torch.nn.Conv2d)})
        before.setdefault("weights", {k: v.clone() for k, v in net.state_dict().items() if k.endswith("conv2.weight")})
        return real(net, *args)

    monkeypatch.setattr(finetune_module, "_train_step", spy)
    result = finetune(tiny_digits, FinetuneConfig(**TINY, epochs=1, lr=0.1))
    assert seen and all(kinds == {_ConvAsMatmul} for kinds in seen)
    assert {type(m) for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)} == {torch.nn.Conv2d}
    after = result.model.state_dict()
    assert all(not torch.equal(after[k], v) for k, v in before["weights"].items())  # they hold the trained weights


# --- stopping ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_digits():
    return mnist_sample(limit_per_class=20)  # 160 to train on: 5 steps per epoch at batch 32


def run_until_stopped(dataset, how: str):
    """A tiny run that a stop request or a cancel ends after step 3, or a time budget before step 1."""
    recorder = Recorder()
    if how in ("stop request", "cancel"):
        stop, cancel = threading.Event(), threading.Event()

        def on_event(event):
            recorder(event)
            if event.kind == "step" and event.step == 3:
                (stop if how == "stop request" else cancel).set()

        config = FinetuneConfig(**TINY, epochs=2, lr=0.1)
        return finetune(dataset, config, on_event=on_event, stop=stop, cancel=cancel), recorder
    config = FinetuneConfig(**TINY, epochs=2, lr=0.1, time_budget_s=1e-6)
    return finetune(dataset, config, on_event=recorder), recorder


def test_a_stop_request_ends_the_run_at_the_next_step_and_keeps_the_model(tiny_digits):
    result, recorder = run_until_stopped(tiny_digits, "stop request")
    assert [e.step for e in recorder.steps()] == [1, 2, 3]
    assert recorder.kinds()[-1] == "stopped" and "kept" in recorder.events[-1].message
    assert result.stopped and result.reason == "stopped on request"
    assert result.model is not None and result.stopped_at == {"epoch": 1, "step": 3, "total_steps": 10}
    assert 0 <= result.val_accuracy <= 1 and np.array(result.confusion_matrix).sum() == 40  # validated


def test_a_stopped_model_saves_loads_and_its_card_says_where_it_stopped(tiny_digits, tmp_path):
    result, _ = run_until_stopped(tiny_digits, "stop request")
    folder = result.save(tmp_path / "stopped")
    assert resnet_hub.load(folder, device="cpu").labels == tiny_digits.classes
    config = json.loads((folder / "config.json").read_text())
    assert config["training"]["stopped"] == {"epoch": 1, "step": 3, "total_steps": 10, "reason": "stopped on request"}
    assert "**Stopped early** (stopped on request) at epoch 1, step 3 of 10" in (folder / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stopped"]  # no temporary folder left beside it


def test_cancel_ends_the_run_at_the_next_step_and_keeps_nothing(tiny_digits, tmp_path):
    result, recorder = run_until_stopped(tiny_digits, "cancel")
    assert [e.step for e in recorder.steps()] == [1, 2, 3]
    assert recorder.kinds()[-1] == "stopped" and recorder.events[-1].message == "cancelled: nothing saved"
    assert result.stopped and result.model is None and result.confusion_matrix is None
    with pytest.raises(FinetuneError, match="cancelled.*no weights to save"):
        result.save(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_a_time_budget_spent_before_the_first_step_keeps_nothing(tiny_digits, tmp_path):
    result, recorder = run_until_stopped(tiny_digits, "time budget")
    assert recorder.steps() == [] and recorder.kinds()[-1] == "stopped"
    assert "nothing learned yet, nothing saved" in recorder.events[-1].message
    assert result.stopped and "time budget" in result.reason and result.model is None
    with pytest.raises(FinetuneError, match="time budget.*no weights to save"):
        result.save(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


# --- the saved model -----------------------------------------------------------------------------


def test_the_saved_folder_loads_with_the_class_names_and_predicts_like_the_trained_model(digits_run, tmp_path):
    dataset, config, result, _ = digits_run
    folder = result.save(tmp_path / "digits")
    assert resnet_hub.load(folder, device="cpu").labels == dataset.classes
    _, val = stratified_split(dataset, config.val_fraction, config.seed)
    images = [dataset.images[i] for i in val[::8]]  # one or two of each class
    predictor = Predictor(folder, device="cpu", precision="fp32")
    batch = predictor.preprocess(images)
    with torch.no_grad():
        in_memory = result.model.eval()(batch)
    assert [p.top1 for p in predictor.classify(images, top_k=1)] == [dataset.classes[i] for i in in_memory.argmax(1)]
    torch.testing.assert_close(predictor.logits(batch), in_memory, atol=1e-3, rtol=1e-3)


def test_the_model_card_reports_accuracy_dataset_hyperparameters_and_confusion_matrix(digits_run, tmp_path):
    dataset, _, result, _ = digits_run
    card = (result.save(tmp_path / "digits") / "README.md").read_text()
    assert f"| accuracy | {round(result.val_accuracy, 4):.4f} |" in card
    assert "- mnist-sample" in card.split("---")[1]  # datasets in the Hub metadata
    for row in ("| hyperparameter | value |", "| epochs | 3 |", "| lr | 0.1 |", "| batch_size | 32 |",
                "| image_size | 32 |"):
        assert row in card
    for name, counts in zip(dataset.classes, result.confusion_matrix):
        assert f"| **{name}** | {' | '.join(map(str, counts))} |" in card


def test_config_json_records_the_validation_accuracy_and_dataset(digits_run, tmp_path):
    _, _, result, _ = digits_run
    config = json.loads((result.save(tmp_path / "digits") / "config.json").read_text())
    assert config["metrics"]["accuracy"] == round(result.val_accuracy, 4)
    assert config["datasets"] == ["mnist-sample"]


def test_the_confusion_matrix_counts_each_validation_image_once(digits_run):
    dataset, config, result, _ = digits_run
    _, val = stratified_split(dataset, config.val_fraction, config.seed)
    matrix = np.array(result.confusion_matrix)
    assert matrix.shape == (10, 10) and matrix.sum() == len(val)
    assert matrix.sum(1).tolist() == np.bincount([dataset.targets[i] for i in val], minlength=10).tolist()
    assert np.trace(matrix) / len(val) == pytest.approx(result.val_accuracy)


# --- on a GPU ------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_on_cuda_a_run_trains_under_autocast_and_saves_weights_that_load_on_the_cpu(precision, tmp_path):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    dataset = mnist_sample(limit_per_class=40)
    recorder = Recorder()
    config = FinetuneConfig(**{**TINY, "device": "cuda", "precision": precision}, epochs=3, lr=0.1, seed=0)
    result = finetune(dataset, config, on_event=recorder)
    assert f"on {torch.cuda.get_device_name()}, {precision}" in recorder.events[0].message  # no fp32 fallback
    assert next(result.model.parameters()).is_cuda
    assert all(math.isfinite(e.loss) for e in recorder.steps())  # fp16: the gradient scaler keeps the loss finite
    assert result.val_accuracy > 0.5
    folder = result.save(tmp_path / "digits")
    on_cpu = resnet_hub.load(folder, device="cpu")
    assert on_cpu.labels == dataset.classes
    _, val = stratified_split(dataset, config.val_fraction, config.seed)
    x = Predictor(folder, device="cpu", precision="fp32").preprocess([dataset.images[i] for i in val[::4]])
    with torch.no_grad():
        gpu = result.model.eval()(x.cuda()).argmax(1).cpu()
        cpu = on_cpu.eval()(x).argmax(1)
    assert (gpu == cpu).float().mean() > 0.95  # fp32 both sides: only summation order differs


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (NCCL runs one process per GPU)")
def test_torchrun_on_two_gpus_uses_nccl_and_keeps_the_single_process_schedule(tmp_path, capsys):
    cli = [a if a != "cpu" else "cuda" for a in CLI_TINY]
    done = torchrun_finetune(cli, tmp_path / "ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["finetune", *cli, "--json", "--out", str(tmp_path / "single")]) == 0
    single, ddp = json.loads(capsys.readouterr().out), json.loads(done.stdout)
    assert ddp["steps"] == single["steps"] == 5
    assert ddp["lr_schedule"] == pytest.approx(single["lr_schedule"])


# --- fine-tuning a saved model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_run(saved_models, tmp_path_factory):
    """The 10-class "digit N" base, fine-tuned onto 3 colours with the stem and layer1-2 frozen.

    A loaded copy of the base and a Predictor on it are in use before the run and compared after.
    """
    base = saved_models["resnet18"]
    base_files = files(base)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    in_use = resnet_hub.load(base, device="cpu")
    predictor = Predictor(base, device="cpu", precision="fp32")
    with torch.no_grad():
        before = {"model": in_use(x), "predictor": predictor.logits(x)}
    dataset = read_zip(colour_zip(tmp_path_factory.mktemp("colours") / "colours.zip"))
    config = FinetuneConfig(base=str(base), image_size=32, crop_pct=0.9, batch_size=16, epochs=2, lr=0.1, freeze=2,
                            device="cpu", precision="fp32")
    result = finetune(dataset, config)
    return dict(base=base, base_files=base_files, x=x, in_use=in_use, predictor=predictor, before=before,
                dataset=dataset, result=result)


def test_fine_tuning_onto_other_classes_replaces_the_head_and_says_so(base_run):
    model = base_run["result"].model
    assert model.labels == ["blue", "green", "red"] and model.fc.out_features == 3
    assert any("head replaced" in note and "10-class" in note for note in model.info.notes)
    assert model.info.base_model is None  # a local folder is no Hub repo: the card must not link to it


def test_image_size_and_crop_replace_the_bases_preprocessing_and_are_saved(base_run, tmp_path):
    base = resnet_hub.load(base_run["base"]).preprocessing
    assert (base.input_size, base.crop_pct) == (224, 0.875)
    folder = base_run["result"].save(tmp_path / "colours")
    p = resnet_hub.load(folder).preprocessing
    assert (p.input_size, p.crop_pct) == (32, 0.9)


def test_fine_tuning_leaves_the_base_folder_byte_identical(base_run):
    assert files(base_run["base"]) == base_run["base_files"]


def test_a_base_model_in_use_elsewhere_is_never_modified(base_run):
    with torch.no_grad():
        assert torch.equal(base_run["in_use"](base_run["x"]), base_run["before"]["model"])
        assert torch.equal(base_run["predictor"].logits(base_run["x"]), base_run["before"]["predictor"])
    assert base_run["in_use"].fc.out_features == 10 and base_run["predictor"].labels[0] == "digit 0"


def test_frozen_stages_keep_their_weights_while_later_stages_train(base_run):
    base = load_file(base_run["base"] / "model.safetensors")
    tuned = {k: v.cpu() for k, v in base_run["result"].model.state_dict().items()}
    frozen = [k for k in base if k.startswith(("conv1.", "bn1.", "layer1.", "layer2."))]
    trained = [k for k in base if k.startswith(("layer3.", "layer4.")) and "num_batches" not in k]
    assert frozen and trained
    assert all(torch.equal(tuned[k], base[k]) for k in frozen)  # BatchNorm statistics included
    assert all(not torch.equal(tuned[k], base[k]) for k in trained)


# --- cached frozen features ---------------------------------------------------------------------


def colour_base_config(base: Path, **change) -> FinetuneConfig:
    return FinetuneConfig(**{**dict(base=str(base), image_size=32, batch_size=16, epochs=2, lr=0.05, device="cpu",
                                    precision="fp32", seed=0), **change})


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    return read_zip(colour_zip(tmp_path_factory.mktemp("colour-data") / "colours.zip"))


@pytest.mark.parametrize("freeze", [2, 4], ids=["freeze-2", "freeze-4-head-only"])
def test_cached_and_uncached_loops_give_the_same_losses_and_weights_without_augmentation(saved_models, colours, freeze,
                                                                                       monkeypatch):
    monkeypatch.setattr(frozen_module, "FOLD_FROZEN_BATCHNORM", False)  # the very computation of the full loop
    runs = {}
    for cache in (True, False):
        recorder = Recorder()
        config = colour_base_config(saved_models["resnet18"], freeze=freeze, augment="none", cache_features=cache,
                                    cache_engine="torch")
        runs[cache] = (finetune(colours, config, on_event=recorder), recorder)
    (cached, cached_events), (full, full_events) = runs[True], runs[False]
    assert "frozen-feature cache: 39 training images x 1 view" in cached_events.events[0].message
    assert "cached" in cached_events.kinds() and "cached" not in full_events.kinds()
    assert [e.loss for e in cached_events.steps()] == pytest.approx([e.loss for e in full_events.steps()], rel=1e-5)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(cached.model.state_dict()[key], value, atol=1e-5, rtol=1e-5, msg=key)
    assert cached.val_accuracy == full.val_accuracy


@pytest.mark.parametrize("freeze", [2, 4])
def test_the_folded_frozen_part_computes_the_features_of_the_unfolded_one(saved_models, freeze):
    model = resnet_hub.load(saved_models["resnet50"], device="cpu")
    model.freeze(freeze)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    autocast = autocast_args(torch.device("cpu"), "fp32")
    exact = frozen_module.frozen_features(model.eval(), x, autocast)
    folded = frozen_module.frozen_features(frozen_module.frozen_part(model), x, autocast)
    assert (folded - exact).norm() / exact.norm() < 1e-5
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen_module.frozen_part(model).modules())


def test_with_folded_batchnorm_the_cached_loop_still_follows_the_full_loop(saved_models, colours):
    """Folding changes the features by float rounding only; training amplifies that a little, step by step."""
    losses = {}
    for cache in (True, False):
        recorder = Recorder()
        config = colour_base_config(saved_models["resnet18"], freeze=3, augment="none", cache_features=cache)
        result = finetune(colours, config, on_event=recorder)
        losses[cache] = [e.loss for e in recorder.steps()]
    assert losses[True] == pytest.approx(losses[False], rel=1e-2)


needs_openvino = pytest.mark.skipif(bool(__import__("resnet_hub.engines").engines.openvino_available()),
                                   reason="OpenVINO does not run here")


@needs_openvino
@pytest.mark.parametrize("freeze", [3, 4], ids=["freeze-3", "freeze-4-head-only"])
def test_the_openvino_frozen_part_computes_torchs_features_and_is_converted_once(saved_models, freeze, tmp_path,
                                                                              monkeypatch):
    from resnet_hub import engines

    monkeypatch.setenv("RESNET_HUB_ENGINE_CACHE", str(tmp_path))
    monkeypatch.setattr(frozen_module, "TRUNK_INT8", False)
    model = resnet_hub.load(saved_models["resnet18"], device="cpu")
    model.freeze(freeze)
    x = torch.randn(10, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    fp32 = autocast_args(torch.device("cpu"), "fp32")
    exact = frozen_module.frozen_features(model.eval(), x, fp32)
    folds, fold = [], frozen_module.frozen_part
    monkeypatch.setattr(frozen_module, "frozen_part", lambda m: folds.append(m) or fold(m))
    notes = []
    for _ in range(2):
        engines.forget_converted()  # as in a new process: only the disk cache remains
        trunk, note = frozen_module.frozen_trunk(model, x, passes=10, autocast=fp32, engine="openvino")
        assert isinstance(trunk, engines.OpenVINOPart), note
        assert (trunk(x) - exact).norm() / exact.norm() < 1e-4
        notes.append(note)
    assert notes[0].startswith("frozen part on OpenVINO fp32 (converted in") and "from fp32, relative" in notes[0]
    assert notes[1].startswith("frozen part on OpenVINO fp32 (read from the engine cache in")
    assert len(folds) == 1  # the conversion folded a copy to convert; the part read from the cache needed none
    # auto converts only for a run long enough to pay for it, but uses a converted part whatever the run's length
    assert isinstance(frozen_module.frozen_trunk(model, x, 10, fp32)[0], engines.OpenVINOPart)
    other = resnet_hub.load(saved_models["resnet50"], device="cpu")
    other.freeze(freeze)
    assert frozen_module.frozen_trunk(other, x, 10, fp32)[1] == ""  # torch: not converted, too short a run
    # a run long enough to pay for converting converts by itself, and the time it took is kept for the next choice
    trunk, note = frozen_module.frozen_trunk(other, x, 10**7, fp32)
    assert isinstance(trunk, engines.OpenVINOPart) and "(converted in" in note, note
    record = json.loads((tmp_path / frozen_module.TRUNK_CONVERSIONS).read_text())
    assert any(size.endswith("parameters at 3x64x64") and seconds > 0 for size, seconds in record.items()), record
    # a damaged IR is never half-read: converted afresh
    engines.forget_converted()
    for weights in tmp_path.glob("openvino-*/model.bin"):
        weights.write_bytes(b"damaged")
    trunk, note = frozen_module.frozen_trunk(model, x, 10, fp32, engine="openvino")
    assert "(converted in" in note and (trunk(x) - exact).norm() / exact.norm() < 1e-4


@needs_openvino
def test_a_frozen_part_that_openvino_gets_wrong_falls_back_to_torch_and_says_so(saved_models, colours, monkeypatch):
    from resnet_hub import engines

    monkeypatch.setattr(engines.OpenVINOPart, "__call__", lambda self, x: torch.full((len(x), 256, 2, 2), 7.0))
    recorder = Recorder()
    result = finetune(colours, colour_base_config(saved_models["resnet18"], freeze=3, cache_engine="openvino"),
                      on_event=recorder)
    cached = next(e for e in recorder.events if e.kind == "cached")
    assert "frozen part on torch: OpenVINO int8 was" in cached.message and "; OpenVINO fp32 was" in cached.message
    assert "from the fp32 features (more than 0.1)" in cached.message
    assert result.model is not None and any("frozen part on torch" in n for n in result.model.info.notes)


@needs_openvino
def test_a_run_cached_by_openvino_trains_as_the_torch_cached_one_and_its_card_says_so(saved_models, colours,
                                                                                      monkeypatch):
    monkeypatch.setattr(frozen_module, "TRUNK_INT8", False)
    losses, notes, parts = {}, {}, {}
    for engine in ("torch", "openvino"):
        recorder = Recorder()
        result = finetune(colours, colour_base_config(saved_models["resnet18"], freeze=3, augment="none",
                                                      cache_engine=engine), on_event=recorder)
        losses[engine] = [e.loss for e in recorder.steps()]
        notes[engine] = result.model.info.notes
        parts[engine] = result.frozen_part
    assert parts == {"torch": "torch", "openvino": "openvino fp32"}  # what computed the cache, as data too
    assert losses["openvino"] == pytest.approx(losses["torch"], rel=1e-3)
    assert any(n.startswith("frozen part on OpenVINO fp32") for n in notes["openvino"])
    assert not any(n.startswith("frozen part") for n in notes["torch"])


@needs_openvino
def test_an_int8_frozen_part_is_quantized_once_and_its_cache_keeps_the_fp32_caches_accuracy(digit_base, tmp_path,
                                                                                            monkeypatch):
    """The issue's check of a reduced-precision cache: same split and seed, final validation accuracy within 1 point
    of the fp32 cache's, on the MNIST sample (fine-tuning a digit model trained here, its first three stages
    frozen)."""
    monkeypatch.setenv("RESNET_HUB_ENGINE_CACHE", str(tmp_path))
    digits = mnist_sample(limit_per_class=200)  # 1,600 to train, 400 to validate: a point is 4 images
    runs = {}
    for engine in ("torch", "openvino", "openvino"):
        config = FinetuneConfig(base=str(digit_base), freeze=3, epochs=2, lr=0.05, device="cpu", precision="fp32",
                                seed=0, cache_engine=engine)
        result = finetune(digits, config)
        note = next((n for n in result.model.info.notes if n.startswith("frozen part")), "")
        runs.setdefault(engine, []).append((result.val_accuracy, note))
    (fp32_accuracy, torch_note), = runs["torch"]
    (first_accuracy, first_note), (second_accuracy, second_note) = runs["openvino"]
    assert torch_note == ""
    assert first_note.startswith("frozen part on OpenVINO int8 (quantized in") or first_note.startswith(
        "frozen part on OpenVINO int8 (converted in"), first_note
    assert second_note.startswith("frozen part on OpenVINO int8 (read from the engine cache in"), second_note
    assert abs(first_accuracy - fp32_accuracy) <= 0.01 + 1e-6, (first_accuracy, fp32_accuracy, first_note)
    assert second_accuracy == first_accuracy
    assert fp32_accuracy > 0.9  # a digit model's features: the comparison is between two working classifiers


def test_an_unknown_cache_engine_is_refused_with_the_choices():
    with pytest.raises(FinetuneError, match="cache engine must be one of auto, torch, openvino, got 'tensorrt'"):
        FinetuneConfig(cache_engine="tensorrt").validate()


def test_the_cache_holds_the_stated_number_of_views_and_its_size_is_in_the_start_message(saved_models, colours):
    recorder = Recorder()
    finetune(colours, colour_base_config(saved_models["resnet18"], freeze=3, cached_views=3, epochs=3), on_event=recorder)
    start = recorder.events[0].message
    # layer3's output at 32 px: 256 channels of 2x2; (39 x 3 + 9) x 256 x 2 x 2 x 4 bytes
    assert "39 training images x 3 views + 9 validation images of 256x2x2 fp32 features" in start
    assert "the image as served + 2 augmented" in start and "0.5 MiB of at most 2.00 GiB" in start


def test_a_cache_over_the_memory_bound_falls_back_to_the_full_loop_and_says_so(saved_models, colours, monkeypatch):
    monkeypatch.setattr(frozen_module, "MAX_CACHE_BYTES", 1000)
    recorder = Recorder()
    result = finetune(colours, colour_base_config(saved_models["resnet18"], freeze=3), on_event=recorder)
    assert "frozen-feature cache skipped" in recorder.events[0].message
    assert "over the bound of" in recorder.events[0].message and "the whole network runs every step" in recorder.events[0].message
    assert "cached" not in recorder.kinds() and result.model is not None


def test_frozen_batchnorm_keeps_its_statistics_when_training_on_the_cache(saved_models, colours):
    result = finetune(colours, colour_base_config(saved_models["resnet18"], freeze=3))
    base = load_file(saved_models["resnet18"] / "model.safetensors")
    tuned = result.model.state_dict()
    frozen = [k for k in base if k.startswith(("bn1.", "layer1.", "layer2.", "layer3.")) and "running" in k]
    assert frozen and all(torch.equal(tuned[k].cpu(), base[k]) for k in frozen)
    assert not torch.equal(tuned["layer4.1.bn2.running_mean"].cpu(), base["layer4.1.bn2.running_mean"])


@pytest.mark.parametrize("cancel", [False, True], ids=["stop", "cancel"])
def test_a_stop_during_feature_caching_keeps_nothing_and_says_so(saved_models, colours, cancel, tmp_path):
    stop, cancelled = threading.Event(), threading.Event()
    recorder = Recorder()

    def on_event(event):
        recorder(event)
        if event.kind == "start":  # the cache is computed next
            (cancelled if cancel else stop).set()

    result = finetune(colours, colour_base_config(saved_models["resnet18"], freeze=3), on_event=on_event, stop=stop,
                      cancel=cancelled)
    assert result.model is None and result.stopped and recorder.steps() == []
    assert "while caching the frozen features" in result.reason
    assert recorder.kinds() == ["start", "stopped"] and "nothing saved" in recorder.events[-1].message
    with pytest.raises(FinetuneError, match="no weights to save"):
        result.save(tmp_path / "model")


# --- defaults from the data ----------------------------------------------------------------------


def test_the_default_batch_is_clipped_to_a_small_training_set(saved_models, colours):
    recorder = Recorder()
    config = colour_base_config(saved_models["resnet18"], batch_size=None, freeze=3, epochs=1)
    result = finetune(colours, config, on_event=recorder)
    assert [e.step for e in recorder.steps()] == [1]  # 39 training images: one batch of 39
    assert "batch 39 (default 64, clipped to the 39 training images)" in recorder.events[0].message
    assert result.model.info.training["hyperparameters"]["batch_size"] == 39


def test_an_explicit_batch_larger_than_the_training_set_is_still_refused(saved_models, colours):
    with pytest.raises(FinetuneError, match="batch size 64 is larger than the 39 training images: use at most 39"):
        finetune(colours, colour_base_config(saved_models["resnet18"], batch_size=64))


@pytest.mark.parametrize(
    ("base", "data", "frozen"),
    [("pretrained", "photos", 3), ("scratch", "photos", -1), ("pretrained", "digits", -1)],
)
def test_a_pretrained_base_on_a_small_photo_set_freezes_three_stages_by_default(saved_models, colours, tiny_digits,
                                                                               base, data, frozen, tmp_path):
    recorder = Recorder()
    source = str(saved_models["resnet18"]) if base == "pretrained" else "scratch:resnet18"
    dataset = colours if data == "photos" else tiny_digits
    result = finetune(dataset, colour_base_config(source, freeze=None, epochs=1, batch_size=None), on_event=recorder)
    assert result.model.frozen_stages == frozen
    card = (result.save(tmp_path / "model") / "README.md").read_text()
    assert f"| freeze | {frozen} |" in card and "| seed | 0 |" in card
    if frozen == 3:
        assert "seed notes advise it for small-sample transfer" in recorder.events[0].message


def test_the_seed_decides_the_run(saved_models, colours):
    losses = {}
    for seed in (0, 0, 1):
        recorder = Recorder()
        finetune(colours, colour_base_config(saved_models["resnet18"], freeze=3, seed=seed, epochs=1), on_event=recorder)
        losses.setdefault(seed, []).append([e.loss for e in recorder.steps()])
    assert losses[0][0] == losses[0][1] and losses[0][0] != losses[1][0]


# --- results you can act on ----------------------------------------------------------------------


def test_per_class_metrics_match_scikit_learn_on_a_known_confusion():
    from sklearn.metrics import classification_report

    from resnet_hub.results import ValidationResults

    y_true = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 1, 2, 1, 1, 0, 2, 2, 2]
    probs = np.eye(3)[y_pred] * 0.6 + 0.4 / 3
    results = ValidationResults.of(y_true, probs, range(10), ["a", "b", "c"])
    assert results.confusion_matrix == [[2, 1, 1], [1, 2, 0], [0, 0, 3]]
    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    for row, name in zip(results.per_class, "012"):
        expected = report[name]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (expected["precision"], expected["recall"], expected["f1-score"], expected["support"]), abs=1e-4)
    # hand-checked: class a has precision 2/3, recall 2/4, F1 4/7
    assert (results.per_class[0]["precision"], results.per_class[0]["recall"], results.per_class[0]["f1"]) == \
        pytest.approx((2 / 3, 0.5, 4 / 7), abs=1e-4)


def test_the_misclassified_view_lists_exactly_the_wrong_images_most_confident_first():
    from resnet_hub.results import ValidationResults

    y_true = [0, 0, 1, 1, 2, 2]
    probs = [[0.9, 0.05, 0.05],  # right
             [0.2, 0.7, 0.1],  # wrong, 0.7
             [0.1, 0.8, 0.1],  # right
             [0.55, 0.4, 0.05],  # wrong, 0.55
             [0.05, 0.9, 0.05],  # wrong, 0.9
             [0.1, 0.1, 0.8]]  # right
    names = {i: f"img{i}.png" for i in range(10, 16)}
    results = ValidationResults.of(y_true, probs, range(10, 16), ["a", "b", "c"], names)
    assert [(m.name, m.confidence) for m in results.mistakes()] == [("img14.png", 0.9), ("img11.png", 0.7), ("img13.png", 0.55)]
    assert [m.index for m in results.mistakes(true="a", predicted="b")] == [11]
    assert [m.index for m in results.mistakes(true=1, predicted=0)] == [13]
    assert results.mistakes(true="a", predicted="c") == []
    cells = {(t, p): len(results.mistakes(t, p)) for t in range(3) for p in range(3) if t != p}
    matrix = np.array(results.confusion_matrix)
    assert all(matrix[t, p] == n for (t, p), n in cells.items())


def test_a_run_reports_per_class_metrics_and_its_mistakes_in_the_card_and_config(digits_run, tmp_path):
    dataset, config, result, _ = digits_run
    folder = result.save(tmp_path / "digits")
    training = json.loads((folder / "config.json").read_text())["training"]
    assert [row["class"] for row in training["per_class"]] == dataset.classes
    assert sum(row["support"] for row in training["per_class"]) == np.array(result.confusion_matrix).sum()
    wrong = result.results.all_mistakes
    assert training["misclassified_total"] == len(wrong) == np.array(result.confusion_matrix).sum() - np.trace(result.confusion_matrix)
    confidences = [m["confidence"] for m in training["misclassified"]]
    assert confidences == sorted(confidences, reverse=True)
    card = (folder / "README.md").read_text()
    assert "| class | precision | recall | F1 | support |" in card
    row = training["per_class"][0]
    assert f"| {row['class']} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |" in card
    if wrong:
        m = training["misclassified"][0]
        assert f"| {m['image']} | {m['true']} | {m['predicted']} | {100 * m['confidence']:.1f}% |" in card


def test_mistakes_from_a_zip_are_named_by_their_member(saved_models, colours):
    result = finetune(colours, colour_base_config(saved_models["resnet18"], freeze=4, epochs=1, lr=1e-4))
    names = {m.name for m in result.results.all_mistakes}
    assert names and all(n.endswith(".png") and n.split("/")[0] in COLOURS for n in names)


# --- continuing the training of a model fine-tuned here -------------------------------------------


@pytest.fixture(scope="module")
def colours_model(saved_models, colours, tmp_path_factory):
    """The 10-class base fine-tuned onto the three colours, saved: a model fine-tuned here."""
    result = finetune(colours, colour_base_config(saved_models["resnet18"], freeze=3, epochs=1))
    result.model.info.training["name"] = "my-colours"
    return result.save(tmp_path_factory.mktemp("tuned") / "my-colours")


def test_continuing_on_the_same_classes_keeps_the_trained_head_and_says_so(colours_model, colours, tmp_path):
    saved = load_file(colours_model / "model.safetensors")
    recorder = Recorder()
    result = finetune(colours, colour_base_config(colours_model, freeze=3, epochs=1, lr=1e-9), on_event=recorder)
    note = "continuing the training of my-colours: the same 3 classes, so its trained head is kept"
    assert note in recorder.events[0].message and not any("head replaced" in n for n in result.model.info.notes)
    torch.testing.assert_close(result.model.fc.weight.detach().cpu(), saved["fc.weight"], atol=1e-6, rtol=0)
    card = (result.save(tmp_path / "again") / "README.md").read_text()
    assert "**Continued** from my-colours (colours.zip: 48 images in 3 classes" in card


def test_continuing_on_other_classes_replaces_the_head_and_says_so(colours_model, tmp_path):
    two = read_zip(colour_zip(tmp_path / "two.zip", {"red": (220, 30, 30), "white": (240, 240, 240)}))
    recorder = Recorder()
    result = finetune(two, colour_base_config(colours_model, freeze=3, epochs=1), on_event=recorder)
    assert "head replaced: the base's 3-class head does not match the 2 classes of two.zip" in recorder.events[0].message
    assert result.model.labels == ["red", "white"] and result.model.fc.out_features == 2


def test_continuing_from_another_architecture_is_refused_before_training(colours, tmp_path):
    folder = tmp_path / "vit"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_base_patch16_224", "num_classes": 3,
                                                     "pretrained_cfg": {"input_size": [3, 224, 224]}}))
    (folder / "model.safetensors").write_bytes(b"")
    recorder = Recorder()
    with pytest.raises(FinetuneError, match=r"cannot train from .*vit.*'vit_base_patch16_224'.*not a plain ResNet.*"
                                            r"Fine-tuning continues only from a ResNet"):
        finetune(colours, colour_base_config(folder), on_event=recorder)
    assert recorder.events == []


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param({"epochs": 0}, "epochs must be a whole number of at least 1, got 0", id="epochs=0"),
        pytest.param({"epochs": -1}, "epochs must be a whole number of at least 1, got -1", id="epochs=-1"),
        pytest.param({"lr": 0.0}, "learning rate must be above 0", id="lr=0"),
        pytest.param({"lr": -0.1}, "learning rate must be above 0", id="lr=-0.1"),
        pytest.param({"batch_size": 1000}, "batch size 1000 is larger than the 160 training images", id="batch>train"),
        pytest.param({"freeze": 7}, "frozen stages must be from -1", id="freeze=7"),
        pytest.param({"val_fraction": 1.5}, "validation fraction must be between 0 and 1, got 1.5", id="val=1.5"),
        pytest.param({"image_size": 4}, "image size must be from 16 to 512 px, got 4", id="size=4"),
        pytest.param({"crop_pct": 0.2}, "crop fraction must be from 0.5 to 1, got 0.2", id="crop=0.2"),
        pytest.param({"clean_epochs": 3}, r"clean epochs must be from 0 to the number of epochs \(1\), got 3", id="clean>epochs"),
        pytest.param({"clean_epochs": -1}, r"clean epochs must be from 0 to the number of epochs \(1\), got -1", id="clean=-1"),
    ],
)
def test_nonsense_hyperparameters_are_refused_before_training(tiny_digits, change, problem):
    recorder = Recorder()
    with pytest.raises(FinetuneError, match=problem):
        finetune(tiny_digits, FinetuneConfig(**{**TINY, "epochs": 1, **change}), on_event=recorder)
    assert recorder.events == []


def test_a_dataset_too_large_for_the_device_is_refused_with_a_smaller_size_suggested(tiny_digits, monkeypatch):
    monkeypatch.setattr(finetune_module, "MAX_DEVICE_BYTES", 2**20)
    with pytest.raises(DataError, match="200 images at 32 px.*--image-size"):
        finetune(tiny_digits, FinetuneConfig(**TINY, epochs=1))


def test_cli_reports_a_zip_with_one_class_as_an_error_with_the_fix(tmp_path, capsys, no_training):
    one_class = colour_zip(tmp_path / "red.zip", {"red": COLOURS["red"]}, per_class=4)
    code = main(["finetune", "--data", str(one_class), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and err.startswith("error: ") and "its own folder" in err
    assert no_training == [] and not (tmp_path / "out").exists()


# --- the command line ----------------------------------------------------------------------------


def test_cli_refuses_an_existing_out_folder(tmp_path, capsys, no_training):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code = main(["finetune", *CLI_TINY, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and err.startswith("error: ") and "already exists" in err and "--overwrite" in err
    assert no_training == [] and files(out) == {"notes.txt": b"mine"}


def test_cli_overwrite_replaces_an_existing_out_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["finetune", *CLI_TINY, "--out", str(out), "--overwrite", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(out)
    assert sorted(files(out)) == ["README.md", "config.json", "model.safetensors", "trained_on.json"]
    assert resnet_hub.load(out, device="cpu").labels == [str(d) for d in range(10)]


def test_cli_limit_per_class_is_refused_for_other_datasets(tmp_path, capsys, no_training):
    data = colour_zip(tmp_path / "colours.zip", per_class=4)
    code = main(["finetune", "--data", str(data), "--limit-per-class", "2", "--out", str(tmp_path / "out")])
    assert code == EXIT_BAD_INPUT and "--limit-per-class applies to mnist-sample only" in capsys.readouterr().err
    assert no_training == []


def test_cli_time_budget_stops_the_run_and_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["finetune", *CLI_TINY, "--time-budget", "0.000001", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == EXIT_STOPPED
    summary = json.loads(captured.out)
    assert summary["stopped"] and summary["out"] is None and "nothing saved" in captured.err
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary sibling


def test_cli_json_reports_per_class_metrics_and_the_misclassified_images(tmp_path, capsys):
    assert main(["finetune", *CLI_TINY, "--out", str(tmp_path / "out"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [row["class"] for row in summary["per_class"]] == [str(d) for d in range(10)]
    assert set(summary["per_class"][0]) == {"class", "precision", "recall", "f1", "support"}
    assert summary["misclassified_total"] == len(summary["misclassified"])
    assert summary["misclassified_total"] == 40 - sum(summary["confusion_matrix"][i][i] for i in range(10))
    assert {"image", "true", "predicted", "confidence"} <= set(summary["misclassified"][0])
    assert summary["hyperparameters"]["batch_size"] == 32 and "macro_f1" in summary["metrics"]


@pytest.mark.parametrize("repo_id", ["no-namespace-slash", "someone/bad name", "someone/x@main"])
def test_cli_push_to_a_malformed_repo_id_is_refused_before_training(tmp_path, capsys, no_training, repo_id):
    code = main(["finetune", *CLI_TINY, "--out", str(tmp_path / "out"), "--push-to", repo_id])
    assert code == EXIT_BAD_INPUT and capsys.readouterr().err.startswith("error: ")
    assert no_training == [] and not (tmp_path / "out").exists()


def test_cli_push_without_a_token_is_refused_before_training(tmp_path, capsys, fake_hub, no_training):
    code = main(["finetune", *CLI_TINY, "--out", str(tmp_path / "out"), "--push-to", "someone/digits"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and err.startswith("error: ") and "HF_TOKEN" in err and "hf auth login" in err
    assert no_training == [] and fake_hub.requests == [] and not (tmp_path / "out").exists()


def test_cli_push_uploads_exactly_the_saved_out_folder(tmp_path, capsys, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "out"
    assert main(["finetune", *CLI_TINY, "--out", str(out), "--push-to", "someone/digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pushed"].startswith("https://huggingface.co/someone/digits/commit/")
    # What save_pretrained wrote; trained_on.json (digests of the training images, for `evaluate`) stays here.
    assert fake_hub.uploaded == {name: data for name, data in files(out).items() if name != "trained_on.json"}


# --- DistributedDataParallel ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_finetune(cli: list[str], out: Path, **env: str) -> subprocess.CompletedProcess:
    """`python -m resnet_hub finetune CLI --json --out OUT` as two processes under torchrun."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               "-m", "resnet_hub", "finetune", *cli, "--json", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """The tiny CLI run as two processes under torchrun (gloo on CPU)."""
    where = tmp_path_factory.mktemp("ddp")
    return where, torchrun_finetune(CLI_TINY, where / "out", OMP_NUM_THREADS="1")


def test_torchrun_with_two_processes_completes_and_prints_one_json_document(ddp_run):
    _, done = ddp_run
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # rank 1 prints nothing: one document, not two
    assert summary["stopped"] is False and summary["out"] is not None


def test_under_torchrun_only_rank_zero_writes_the_out_folder(ddp_run):
    where, done = ddp_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in where.iterdir()] == ["out"]  # no second copy, no temporary siblings
    assert resnet_hub.load(where / "out", device="cpu").labels == [str(d) for d in range(10)]


def test_torchrun_keeps_the_single_process_schedule_for_the_same_global_batch(ddp_run, tmp_path, capsys):
    _, done = ddp_run
    assert main(["finetune", *CLI_TINY, "--json", "--out", str(tmp_path / "single")]) == 0
    single = json.loads(capsys.readouterr().out)
    ddp = json.loads(done.stdout)
    assert ddp["steps"] == single["steps"] == 5
    assert ddp["lr_schedule"] == pytest.approx(single["lr_schedule"])


# --- the starter models in the local store -------------------------------------------------------


@pytest.fixture
def starter_store(tmp_path, monkeypatch):
    """An empty store with the resnet18 starter recipe shrunk to 3 steps; counts the training runs."""
    monkeypatch.setenv("RESNET_HUB_HOME", str(tmp_path))
    monkeypatch.setitem(starters.STARTER_RECIPE, "resnet18", FinetuneConfig(**TINY, epochs=1, lr=0.1))
    monkeypatch.setattr(starters, "mnist_sample", lambda: mnist_sample(limit_per_class=10))
    runs = []
    real = starters.finetune
    monkeypatch.setattr(starters, "finetune", lambda *a, **k: runs.append(1) or real(*a, **k))
    return runs


def test_the_starter_is_trained_into_the_store_and_loads(starter_store, tmp_path):
    folder = starters.build_starter("resnet18")
    assert folder == tmp_path / "models" / "starter-resnet18-mnist"
    model = resnet_hub.load(folder, device="cpu")
    assert model.labels == [str(d) for d in range(10)]
    assert model.info.training["name"] == "starter-resnet18-mnist"


def test_a_stored_starter_is_not_trained_again(starter_store):
    folder = starters.build_starter("resnet18")
    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert starters.build_starter("resnet18") == folder
    assert starter_store == [1] and weights.stat().st_mtime_ns == stamp


def test_local_models_lists_the_starter_first(starter_store):
    resnet_hub.create("resnet18", num_classes=2).save_pretrained(store.models_dir() / "aaa-first-by-name")
    folder = starters.build_starter("resnet18")
    assert store.local_models() == [folder, store.models_dir() / "aaa-first-by-name"]



# --- the benchmark's table (its speed is reported, never tested) -----------------------------------


def test_bench_finetune_puts_each_loop_beside_the_tutorials_with_both_accuracies():
    from resnet_hub.bench_finetune import run_finetune_bench

    report = run_finetune_bench("resnet18", epochs=1, image_size=32, per_class=4, freezes=(4, -1), device="cpu",
                                wall_arch=None, log=None)
    rows = report["rows"]
    assert [(r["setting"], r["loop"].split()[0]) for r in rows] == [
        ("head only (freeze 4)", "tutorial"), ("head only (freeze 4)", "resnet-hub"), ("head only (freeze 4)", "resnet-hub"),
        ("full fine-tune (freeze -1)", "tutorial"), ("full fine-tune (freeze -1)", "resnet-hub")]
    assert "cache of 2 views by" in rows[1]["loop"] and "first run on this base" in rows[1]["loop"]
    assert "again, same base" in rows[2]["loop"] and "whole network" in rows[4]["loop"]
    assert all(r["images/s"] > 0 and 0 <= r["val accuracy"] <= 1 for r in rows)
    assert rows[1]["speedup"] == pytest.approx(rows[1]["images/s"] / rows[0]["images/s"])
    assert any("AMD" in n or "Intel" in n or "device" in n for n in report["notes"])
