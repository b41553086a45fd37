"""Calibrated confidence: the temperature fitted on a validation split lowers the held-out calibration error, travels
in config.json, and is what the Predictor and the ONNX export apply."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_hub.calibration import (
    BINS,
    MIN_IMAGES,
    answered_at,
    calibrate,
    calibrate_probabilities,
    expected_calibration_error,
    fit_temperature,
    reliability,
)
from resnet_hub.errors import LayoutError
from resnet_hub.weights import create, load


@pytest.fixture(scope="module")
def overconfident():
    """Logits and labels of a small net trained to memorise real MNIST digits whose labels are 40% noise: on
    held-out digits it says 'sure' far more often than it is right. (fit, judge) halves of the held-out images."""
    from resnet_hub.data import mnist_sample

    data = mnist_sample(limit_per_class=60)
    x = torch.stack([torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32).reshape(-1) / 255) for im in data.images])
    y = torch.tensor(data.targets)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=g)
    train, held = order[:300], order[300:]
    noisy = y[train].clone()
    flip = torch.rand(len(train), generator=g) < 0.4
    noisy[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(300):  # full batch, to memorisation: the noisy labels are learned too
        opt.zero_grad()
        F.cross_entropy(net(x[train]), noisy).backward()
        opt.step()
    with torch.no_grad():
        logits = net(x[held])
    half = len(held) // 2
    return (logits[:half], y[held][:half]), (logits[half:], y[held][half:])


def test_the_model_trained_on_noisy_labels_is_overconfident(overconfident):
    _, (logits, labels) = overconfident
    probs = torch.softmax(logits, 1)
    assert probs.max(1).values.mean() > (probs.argmax(1) == labels).float().mean() + 0.15


def test_a_temperature_fitted_on_one_part_lowers_the_calibration_error_of_the_other(overconfident):
    (fit_logits, fit_labels), (logits, labels) = overconfident
    t = fit_temperature(fit_logits, fit_labels)
    assert t > 1  # overconfident: softened
    before = expected_calibration_error(torch.softmax(logits, 1), labels)
    after = expected_calibration_error(torch.softmax(logits / t, 1), labels)
    assert after < before / 2
    assert (torch.softmax(logits / t, 1).argmax(1) == logits.argmax(1)).all()  # the answers stay the same


def test_calibrate_reports_both_errors_cross_validated_and_a_reliability_diagram(overconfident):
    (a, ya), (b, yb) = overconfident
    result = calibrate(torch.cat([a, b]), torch.cat([ya, yb]))
    assert result.fitted and result.temperature > 1 and result.ece_after < result.ece_before
    assert len(result.reliability_before) == len(result.reliability_after) == BINS
    assert sum(r["count"] for r in result.reliability_after) == len(ya) + len(yb)
    assert [r["threshold"] for r in result.thresholds][:2] == [0.5, 0.6]
    assert "before" in result.describe() and "after" in result.describe()


def test_too_few_images_keep_temperature_one_and_say_so():
    logits = torch.randn(MIN_IMAGES - 1, 3)
    result = calibrate(logits, torch.randint(0, 3, (MIN_IMAGES - 1,)))
    assert result.temperature == 1.0 and result.ece_after is None and not result.fitted
    assert "fewer than the 40" in result.note


def test_the_ece_is_the_weighted_gap_between_accuracy_and_confidence_per_bin():
    probs = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.45, 0.55]])
    labels = torch.tensor([0, 1, 0, 1])
    # bin 15 (0.933..1]: conf 0.95, acc 0.5; bin 9 (0.533..0.6]: conf 0.55, acc 1 (two images)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
    rows = reliability(probs, labels)
    assert rows[14]["count"] == 2 and rows[8]["count"] == 2 and rows[0]["accuracy"] is None


def test_answered_at_counts_the_images_kept_and_their_accuracy():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    rows = answered_at(probs, torch.tensor([0, 1, 1]), thresholds=(0.5, 0.8, 0.99))
    assert rows[0] == {"threshold": 0.5, "answered": 1.0, "images": 3, "accuracy": pytest.approx(2 / 3)}
    assert rows[1]["answered"] == pytest.approx(1 / 3) and rows[1]["accuracy"] == 1.0
    assert rows[2]["images"] == 0 and rows[2]["accuracy"] is None


def test_calibrating_from_probabilities_is_calibrating_from_logits(overconfident):
    (logits, labels), _ = overconfident
    a = calibrate(logits, labels, min_images=10)
    b = calibrate_probabilities(torch.softmax(logits, 1), labels, min_images=10)
    assert a.temperature == pytest.approx(b.temperature, rel=1e-4)


# ---------------------------------------------------------------------------
# config.json, the Predictor, the ONNX export


def small_model(temperature: float = 2.5):
    torch.manual_seed(0)
    model = create("resnet18", num_classes=3, labels=["a", "b", "c"]).eval()
    model.info.preprocessing = type(model.info.preprocessing)(input_size=32, crop_pct=1.0)
    model.info.temperature = temperature
    return model


def test_the_temperature_round_trips_through_config_json(tmp_path):
    small_model(2.5).save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["temperature"] == 2.5
    assert load(tmp_path / "m", device="cpu").info.temperature == 2.5


def test_a_config_json_without_the_temperature_loads_at_one(tmp_path):
    small_model(2.5).save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    del config["temperature"]
    path.write_text(json.dumps(config))
    assert load(tmp_path / "m", device="cpu").info.temperature == 1.0
    assert "temperature" not in small_model(1.0).config_dict()  # uncalibrated: nothing written


@pytest.mark.parametrize("bad", [0, -1.5, "hot", True])
def test_a_bad_temperature_is_refused_with_the_fix(tmp_path, bad):
    small_model(2.5).save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    config["temperature"] = bad
    path.write_text(json.dumps(config))
    with pytest.raises(LayoutError, match="temperature.*positive number.*remove the field"):
        load(tmp_path / "m", device="cpu")


def test_a_new_head_forgets_the_temperature():
    model = small_model(2.5)
    model.reset_head(4, ["a", "b", "c", "d"])
    assert model.info.temperature == 1.0


def test_the_predictors_probabilities_are_the_temperature_scaled_softmax(tmp_path):
    from resnet_hub.images import to_tensor_batch
    from resnet_hub.predict import Predictor

    small_model(2.5).save_pretrained(tmp_path / "m")
    model = load(tmp_path / "m", device="cpu")
    predictor = Predictor(model, "cpu", "fp32", engine="torch", cache_dir=None)
    from resnet_hub.examples import check_images

    pictures, _ = check_images("photo", 4)
    predictions = predictor.classify(pictures, top_k=3)
    with torch.no_grad():
        logits = model(to_tensor_batch(pictures, model.preprocessing))
    for prediction, row in zip(predictions, logits):
        want = torch.softmax(row / 2.5, 0)
        assert prediction.probabilities == pytest.approx(want[prediction.class_ids].tolist(), abs=1e-4)
        assert prediction.class_ids[0] == int(row.argmax())  # the top-1 is the logits' own
        assert prediction.engine == "torch fp32"


def test_the_onnx_export_gives_the_calibrated_probabilities(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from resnet_hub.export import export_onnx

    model = small_model(2.5)
    record = export_onnx(model, tmp_path / "m.onnx")
    assert record.temperature == 2.5 and "temperature 2.500" in record.describe()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"pixel_values": x.numpy()})[0]
    with torch.no_grad():
        want = torch.softmax(model(x) / 2.5, 1)
    assert torch.softmax(torch.from_numpy(got), 1) == pytest.approx(want, abs=1e-4)


def test_a_finetune_fits_records_and_cards_its_calibration(tmp_path):
    from resnet_hub.data import mnist_sample
    from resnet_hub.finetune import FinetuneConfig, finetune

    result = finetune(mnist_sample(limit_per_class=25), FinetuneConfig(base="scratch:resnet18", epochs=1,
                                                                        image_size=16, batch_size=50))
    assert result.calibration is not None and result.calibration.images == 50
    assert result.calibration.fitted and result.model.info.temperature == result.calibration.temperature
    result.save(tmp_path / "m")
    saved = load(tmp_path / "m", device="cpu")
    assert saved.info.temperature == pytest.approx(result.calibration.temperature, rel=1e-5)
    assert saved.info.training["calibration"]["ece_before"] == pytest.approx(result.calibration.ece_before, abs=1e-5)
    card = (tmp_path / "m" / "README.md").read_text()
    assert "Calibrated confidence" in card
    assert f"{result.calibration.ece_before:.3f} before" in card and f"{result.calibration.ece_after:.3f} after" in card
