"""Predictor: top-k on any image input, refusals that keep it serving, the fast path against fp32,
threads, timings as data, cost figures, compare() and grad-CAM."""

from __future__ import annotations

import concurrent.futures
import copy
import re
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import resnet_hub
from resnet_hub import ImageError, Preprocessing, SourceError, WeightsNotFoundError
from resnet_hub.hardware import HardwareError, fast_precisions
from resnet_hub.predict import (
    Comparison,
    Prediction,
    Predictor,
    PredictorError,
    Timing,
    compare,
)
from resnet_hub.engines import fold_batchnorm

from .conftest import ARCHS, needs_gpu, randomize_batchnorm

SIZE = 64  # small input: every forward pass here is cheap
LABELS = [f"class {i}" for i in range(10)]
CPU = torch.device("cpu")


def small_model(arch: str, seed: int = 0) -> resnet_hub.HubResNet:
    torch.manual_seed(seed)
    model = resnet_hub.create(
        arch, num_classes=len(LABELS), labels=LABELS, preprocessing=Preprocessing(input_size=SIZE, crop_pct=0.875)
    )
    return randomize_batchnorm(model, seed).eval()


def eager_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Worst image's ||out - ref|| / ||ref|| over the logits."""
    return ((out.float() - ref).norm(dim=1) / ref.norm(dim=1)).max().item()


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {"chelsea": data.chelsea(), "astronaut": data.astronaut(), "coffee": data.coffee()}


@pytest.fixture(scope="module")
def models() -> dict[str, resnet_hub.HubResNet]:
    return {arch: small_model(arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def predictors(models) -> dict[str, Predictor]:
    """fp32 on CPU: the reference path, deterministic for equal inputs."""
    return {arch: Predictor(models[arch], "cpu", "fp32") for arch in ARCHS}


@pytest.fixture
def png(tmp_path, photos):
    path = tmp_path / "chelsea.png"
    Image.fromarray(photos["chelsea"]).save(path)
    return path


# --- classify ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_classify_returns_the_top_k_labels_most_probable_first(arch, predictors, photos):
    predictor = predictors[arch]
    prediction = predictor.classify(photos["chelsea"], top_k=3)
    assert len(prediction.labels) == len(prediction.probabilities) == len(prediction.class_ids) == 3
    assert prediction.probabilities == sorted(prediction.probabilities, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in prediction.probabilities)
    assert sum(prediction.probabilities) <= 1.0 + 1e-6
    assert prediction.labels == [LABELS[i] for i in prediction.class_ids]
    assert len(set(prediction.class_ids)) == 3
    assert prediction.top1 == prediction.labels[0]


def test_top_k_of_the_class_count_covers_every_class_and_sums_to_one(predictors, photos):
    prediction = predictors["resnet18"].classify(photos["chelsea"], top_k=len(LABELS))
    assert sorted(prediction.class_ids) == list(range(len(LABELS)))
    assert sum(prediction.probabilities) == pytest.approx(1.0, abs=1e-5)


def test_the_top_k_are_the_k_most_probable_of_all_classes(predictors, photos):
    predictor = predictors["resnet18"]
    everything = predictor.classify(photos["coffee"], top_k=len(LABELS))
    assert predictor.classify(photos["coffee"], top_k=4).class_ids == everything.class_ids[:4]


def test_top_k_defaults_to_5_or_every_class_when_the_model_has_fewer(predictors, photos):
    three_classes = resnet_hub.create("resnet18", num_classes=3, preprocessing=Preprocessing(input_size=32))
    assert len(Predictor(three_classes, "cpu", "fp32").classify(photos["chelsea"]).labels) == 3
    assert len(predictors["resnet18"].classify(photos["chelsea"]).labels) == 5


def test_one_image_gives_a_prediction_and_a_list_or_tuple_gives_a_list(predictors, photos):
    predictor = predictors["resnet18"]
    assert isinstance(predictor.classify(photos["chelsea"], top_k=2), Prediction)
    one = predictor.classify([photos["chelsea"]], top_k=2)
    assert isinstance(one, list) and len(one) == 1 and isinstance(one[0], Prediction)
    three = predictor.classify((photos["chelsea"], photos["coffee"], photos["astronaut"]), top_k=2)
    assert isinstance(three, list) and len(three) == 3


def test_a_batch_gives_each_image_the_prediction_it_gets_alone_in_order(predictors, photos):
    predictor = predictors["resnet50"]
    images = [photos["coffee"], photos["chelsea"], photos["astronaut"]]
    batch = predictor.classify(images, top_k=1)
    for image, prediction in zip(images, batch):
        alone = predictor.classify(image, top_k=1)
        assert prediction.class_ids == alone.class_ids
        assert prediction.probabilities == pytest.approx(alone.probabilities, abs=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_bytes_path_pil_and_numpy_inputs_give_the_same_prediction(arch, predictors, photos, png):
    predictor = predictors[arch]
    expected = predictor.classify(photos["chelsea"], top_k=3)
    assert predictor.classify(png, top_k=3) == expected
    assert predictor.classify(str(png), top_k=3) == expected
    assert predictor.classify(png.read_bytes(), top_k=3) == expected
    assert predictor.classify(Image.open(png), top_k=3) == expected


# --- refusals that leave the Predictor serving -------------------------------------------


@pytest.mark.parametrize("top_k", [0, -1, 11, 2.0, True, "3"], ids=repr)
def test_a_top_k_outside_1_to_the_class_count_is_refused_and_the_predictor_keeps_serving(top_k, predictors, photos):
    predictor = predictors["resnet18"]
    with pytest.raises(PredictorError, match="top_k must be a whole number from 1 to 10"):
        predictor.classify(photos["chelsea"], top_k=top_k)
    assert len(predictor.classify(photos["chelsea"], top_k=2).labels) == 2


@pytest.mark.parametrize(
    "name, content",
    [("empty.jpg", b""), ("page.jpg", b"<!DOCTYPE html><html><body>Not found</body></html>")],
    ids=["zero-byte", "html-named-jpg"],
)
def test_a_bad_image_in_a_batch_is_named_and_the_predictor_keeps_serving(name, content, tmp_path, png, predictors):
    predictor = predictors["resnet18"]
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(ImageError, match=re.escape(f"image 2 of 3 ({name})")):
        predictor.classify([png, bad, png], top_k=2)
    assert len(predictor.classify([png, png], top_k=2)) == 2


@pytest.mark.parametrize(
    "source, error, message",
    [
        ("no-such-model", SourceError, "is not a Hub repo id: write it as 'org/name'"),
        ("./no/such/folder", SourceError, "folder ./no/such/folder does not exist"),
        ("nobody/no-such-resnet", WeightsNotFoundError, "not in the local Hugging Face cache"),
    ],
)
def test_an_unknown_model_is_refused_with_a_message_saying_what_to_pass(source, error, message, hub_cache):
    with pytest.raises(error, match=re.escape(message)):
        Predictor(source, "cpu")


@pytest.mark.parametrize("device", ["tpu", "gpu0", "mps"])
def test_an_unknown_device_is_a_hardware_error_listing_the_choices(device, models):
    with pytest.raises(HardwareError, match=re.escape("use 'auto', 'cpu' or 'cuda'")):
        Predictor(models["resnet18"], device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_a_hardware_error(models):
    with pytest.raises(HardwareError, match="no CUDA GPU is available"):
        Predictor(models["resnet18"], "cuda")


@pytest.mark.parametrize("precision", ["fp8", "float16", "FP32"])
def test_an_unknown_precision_is_a_hardware_error_listing_the_choices(precision, models):
    with pytest.raises(HardwareError, match="choose one of auto, fp32, bf16, fp16"):
        Predictor(models["resnet18"], "cpu", precision)


def test_fp16_on_cpu_falls_back_to_fp32_and_says_so(models, photos):
    with pytest.warns(UserWarning, match="fp16 is not supported fast on this CPU: running fp32 instead"):
        predictor = Predictor(models["resnet18"], "cpu", "fp16")
    assert predictor.precision == "fp32"
    assert predictor.notes == ["fp16 is not supported fast on this CPU: running fp32 instead"]
    assert isinstance(predictor.classify(photos["chelsea"]), Prediction)


def test_auto_precision_on_cpu_serves_the_fastest_checked_path_without_a_note(models, tmp_path):
    predictor = Predictor(models["resnet18"], "cpu", "auto", cache_dir=tmp_path)
    choice = predictor.engine_choice
    passed = [c for c in choice.candidates if c.passed]
    assert predictor.notes == []
    assert f"{predictor.engine} {predictor.precision}" == choice.chosen == min(passed, key=lambda c: c.b1_ms + c.b8_ms).name
    assert {"torch fp32", "openvino int8", "torch int8"} <= {c.name for c in choice.candidates}


# --- the fast path against the fp32 reference --------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_fold_batchnorm_keeps_the_fp32_logits(arch, models, predictors, photos):
    model = models[arch]
    x = predictors[arch].preprocess(list(photos.values()))
    folded = fold_batchnorm(copy.deepcopy(model))
    assert relative_error(eager_logits(folded, x), eager_logits(model, x)) < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_fold_batchnorm_leaves_no_batchnorm_behind(arch, models):
    folded = fold_batchnorm(copy.deepcopy(models[arch]))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


def test_fold_batchnorm_refuses_a_model_in_train_mode(models):
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(copy.deepcopy(models["resnet18"]).train())


@pytest.mark.parametrize("arch", ARCHS)
def test_the_fp32_fast_path_matches_the_eager_model(arch, models, predictors, photos):
    x = predictors[arch].preprocess(list(photos.values()))
    assert relative_error(predictors[arch].logits(x), eager_logits(models[arch], x)) < 1e-4


@pytest.mark.skipif("bf16" not in fast_precisions(CPU), reason="this CPU has no fast bf16 (AVX-512-BF16 or AMX)")
@pytest.mark.parametrize("arch", ARCHS)
def test_the_bf16_path_agrees_with_fp32_on_real_images(arch, models, photos):
    predictor = Predictor(models[arch], "cpu", "bf16")
    assert predictor.precision == "bf16"
    x = predictor.preprocess(list(photos.values()))
    assert relative_error(predictor.logits(x), eager_logits(models[arch], x)) < 2e-2


@pytest.mark.parametrize("arch", ARCHS)
def test_the_predictor_never_modifies_the_model_it_was_given(arch, photos):
    model = small_model(arch).train()  # train mode too: serving must not switch it to eval
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predictor = Predictor(model, "cpu")
    predictor.classify(photos["chelsea"])
    predictor.gradcam(photos["chelsea"])
    predictor.time(runs=1, warmup=0)
    assert predictor.gmacs > 0
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


# --- threads ------------------------------------------------------------------------------


def test_concurrent_calls_give_exactly_the_answers_of_one_thread(predictors, photos):
    predictor = predictors["resnet18"]
    images = [v for a in photos.values() for v in (a, np.fliplr(a), np.rot90(a))][:8]
    expected = [predictor.classify(image, top_k=3) for image in images]
    start = threading.Barrier(8, timeout=120)  # all clients call at once; never hang if one fails

    def client(i: int) -> list[tuple[int, Prediction]]:
        start.wait()
        return [((i + j) % 8, predictor.classify(images[(i + j) % 8], top_k=3)) for j in range(4)]

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = [a for answers in pool.map(client, range(8)) for a in answers]
    assert len(answers) == 32
    # Concurrent calls share forward passes (micro-batching): each gets its own rows, equal to
    # the one-thread answer up to the rounding a batched convolution may differ by.
    for i, prediction in answers:
        assert prediction.labels == expected[i].labels
        assert prediction.probabilities == pytest.approx(expected[i].probabilities, abs=1e-5)


# --- timing -------------------------------------------------------------------------------


def test_time_reports_every_field_with_consistent_relations(predictors):
    predictor = predictors["resnet18"]
    timing = predictor.time(batch_size=2, runs=5, warmup=1)
    assert isinstance(timing, Timing)
    assert (timing.model, timing.precision, timing.batch_size, timing.runs) == ("resnet18", "fp32", 2, 5)
    assert timing.device.startswith("cpu")
    assert timing.first_call_ms > 0
    assert timing.p90_ms >= timing.median_ms > 0
    assert timing.images_per_s == pytest.approx(1000 * 2 / timing.median_ms)
    assert set(timing.to_dict()) >= {
        "model", "device", "precision", "batch_size", "first_call_ms", "median_ms", "p90_ms", "runs", "images_per_s",
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"batch_size": -1},
        {"runs": 0},
        {"warmup": -1},
        {"batch_size": 1.5},
        {"runs": True},
        {"batch_size": 3, "images": torch.zeros(2, 3, SIZE, SIZE)},
    ],
    ids=["batch-0", "batch-negative", "runs-0", "warmup-negative", "batch-float", "runs-bool", "too-few-images"],
)
def test_time_refuses_bad_arguments(kwargs, predictors):
    with pytest.raises(PredictorError, match="batch_size"):
        predictors["resnet18"].time(**kwargs)


@pytest.mark.parametrize(
    "arch, gmacs, parameters", [("resnet18", 1.82, 11_689_512), ("resnet50", 4.11, 25_557_032)]
)
def test_gmacs_and_parameters_match_the_published_figures_at_224_px(arch, gmacs, parameters):
    predictor = Predictor(resnet_hub.create(arch), "cpu", "fp32")
    assert predictor.gmacs == pytest.approx(gmacs, rel=0.02)
    assert predictor.num_parameters() == parameters


# --- compare ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def comparison(predictors, photos) -> Comparison:
    return compare(photos["chelsea"], [predictors["resnet18"], predictors["resnet50"]], top_k=3, runs=2)


def test_compare_gives_each_model_its_own_prediction(comparison, predictors, photos):
    assert list(comparison.predictions) == ["resnet18", "resnet50"]
    for name, prediction in comparison.predictions.items():
        assert prediction == predictors[name].classify(photos["chelsea"], top_k=3)
    tops = {p.top1 for p in comparison.predictions.values()}
    assert comparison.agree == (len(tops) == 1)


def test_compare_reports_timings_parameters_and_gmacs_per_model(comparison, predictors):
    assert list(comparison.timings) == list(comparison.parameters) == list(comparison.gmacs) == ["resnet18", "resnet50"]
    for name, timing in comparison.timings.items():
        assert (timing.model, timing.batch_size, timing.runs, timing.precision) == (name, 1, 2, "fp32")
        assert comparison.parameters[name] == predictors[name].num_parameters()
    assert 0 < comparison.gmacs["resnet18"] < comparison.gmacs["resnet50"]


def test_comparison_agrees_only_when_every_top1_label_is_the_same():
    def prediction(*labels: str) -> Prediction:
        return Prediction(list(labels), [0.6, 0.3], [0, 1])

    assert Comparison({"a": prediction("cat", "dog"), "b": prediction("cat", "fox")}, {}, {}, {}).agree
    assert not Comparison({"a": prediction("cat", "dog"), "b": prediction("dog", "cat")}, {}, {}, {}).agree


def test_compare_names_two_predictors_of_the_same_model_apart(models, predictors, photos):
    twin = Predictor(models["resnet18"], "cpu", "fp32")
    result = compare(photos["coffee"], [predictors["resnet18"], twin], top_k=2, runs=1)
    assert list(result.predictions) == ["resnet18 #1", "resnet18 #2"]
    assert result.agree


def test_comparison_table_has_one_row_per_model_with_the_documented_columns(comparison):
    rows = comparison.table()
    assert [r["model"] for r in rows] == ["resnet18", "resnet50"]
    for row in rows:
        assert list(row) == [
            "model", "top-1", "confidence", "first call after load (ms)", "p10 (ms)", "median (ms)", "p90 (ms)",
            "runs", "images/s", "parameters (M)", "GMACs", "device", "engine", "why this engine",
        ]
        assert row["p10 (ms)"] <= row["median (ms)"] <= row["p90 (ms)"]
        assert row["top-1"] == comparison.predictions[row["model"]].top1
        assert row["parameters (M)"] == round(comparison.parameters[row["model"]] / 1e6, 2)


# --- grad-CAM -----------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_gradcam_overlays_the_input_crop_for_the_top_class_by_default(arch, predictors, photos):
    predictor = predictors[arch]
    overlay, class_id = predictor.gradcam(photos["chelsea"])
    assert isinstance(overlay, Image.Image)
    assert overlay.mode == "RGB" and overlay.size == (SIZE, SIZE)
    assert class_id == predictor.classify(photos["chelsea"], top_k=1).class_ids[0]


def test_gradcam_explains_the_class_asked_for(predictors, photos):
    assert predictors["resnet18"].gradcam(photos["chelsea"], class_id=np.int64(3))[1] == 3


@pytest.mark.parametrize("arch", ARCHS)
def test_gradcam_heatmap_varies_over_a_real_image(arch, predictors, photos):
    heatmap, _ = predictors[arch].gradcam(photos["chelsea"], alpha=1.0)  # alpha 1: the colour map alone
    assert np.asarray(heatmap, dtype=np.float32).std(axis=(0, 1)).max() > 10


def test_gradcam_leaves_the_serving_model_unchanged(models, predictors, photos):
    predictor = predictors["resnet18"]
    x = predictor.preprocess(photos["astronaut"])
    before = predictor.logits(x)
    predictor.gradcam(photos["astronaut"], class_id=5)
    assert torch.equal(predictor.logits(x), before)
    assert all(p.grad is None for p in models["resnet18"].parameters())


@pytest.mark.parametrize("class_id", [-1, 10, 2.5, True], ids=repr)
def test_gradcam_refuses_a_class_id_out_of_range(class_id, predictors, photos):
    with pytest.raises(PredictorError, match="class_id must be a whole number from 0 to 9"):
        predictors["resnet18"].gradcam(photos["chelsea"], class_id=class_id)


# --- GPU ----------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("arch", ARCHS)
def test_on_cuda_the_predictor_runs_in_half_precision_and_agrees_with_cpu_fp32(arch, models, photos):
    predictor = Predictor(models[arch], "cuda")
    assert predictor.precision in ("bf16", "fp16")
    x = predictor.preprocess(list(photos.values()))
    assert relative_error(predictor.logits(x).cpu(), eager_logits(models[arch], x)) < 2e-2


def test_gradcam_uses_layer4_unless_its_map_is_too_coarse_to_point_anywhere():
    from resnet_hub.predict import cam_layer

    assert cam_layer(resnet_hub.create("resnet50")) == "layer4"  # 7x7 at 224 px
    digits = resnet_hub.create("resnet18", num_classes=10, preprocessing=Preprocessing(input_size=32, crop_pct=1.0))
    assert cam_layer(digits) == "layer2"  # layer4 is 1x1 and layer3 2x2 at 32 px: layer2 is 4x4


def test_the_heatmap_overlay_has_matplotlibs_inferno_colours_without_importing_matplotlib(monkeypatch):
    import sys

    from matplotlib import colormaps

    from resnet_hub.predict import overlay_heatmap

    picture = Image.new("RGB", (256, 1), "black")
    levels = np.arange(256, dtype=np.uint8)[None, :]  # every level once, left to right
    want = np.uint8(np.clip(0.45 * colormaps["inferno"](levels / 255.0)[..., :3], 0, 1) * 255)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    got = np.asarray(overlay_heatmap(picture, levels / 255.0))
    np.testing.assert_array_equal(got, want)
