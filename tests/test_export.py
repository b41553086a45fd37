"""Export: ONNX that onnxruntime runs with PyTorch's answers, and saved folders that timm loads as they are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import resnet_hub
from resnet_hub import export as export_module
from resnet_hub.data import read_zip
from resnet_hub.examples import calibration_images
from resnet_hub.export import ONNX_OPSET, ExportError, export_onnx
from resnet_hub.finetune import FinetuneConfig, finetune
from resnet_hub.images import to_tensor_batch
from resnet_hub.services.publish import model_downloads

from .conftest import ARCHS
from .test_finetune import colour_zip


@pytest.fixture(scope="module")
def tuned(saved_models, tmp_path_factory):
    """Per architecture: the 10-class base fine-tuned briefly onto three colours at 64 px, saved."""
    data = read_zip(colour_zip(tmp_path_factory.mktemp("colours") / "colours.zip"))
    out = {}
    for arch in ARCHS:
        config = FinetuneConfig(base=str(saved_models[arch]), image_size=64, epochs=1, freeze=3, device="cpu",
                                precision="fp32")
        out[arch] = finetune(data, config).save(tmp_path_factory.mktemp(arch) / "colours")
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_output_matches_pytorch_on_real_photos(tuned, tmp_path, arch):
    import onnxruntime as ort

    model = resnet_hub.load(tuned[arch], device="cpu")
    record = export_onnx(model, tmp_path / "model.onnx")
    assert record.opset == ONNX_OPSET and record.top1_agreement == 1.0 and record.images_checked >= 8
    # Checked here again on photos the export never saw, at another batch size (the batch axis is dynamic).
    photos = to_tensor_batch(calibration_images("photo", 5, offset=40), model.preprocessing)
    session = ort.InferenceSession(str(record.path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"pixel_values": photos.numpy()})[0]
    with torch.no_grad():
        want = model(photos).numpy()
    assert (got.argmax(1) == want.argmax(1)).all()
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary file left


def test_an_exporter_failure_is_a_clear_message_and_leaves_no_file(tuned, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported: an operator the exporter cannot handle")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError, match=r"ONNX export of resnet18 failed \(RuntimeError: Unsupported.*safetensors"):
        export_onnx(resnet_hub.load(tuned["resnet18"], device="cpu"), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_without_onnxruntime_installed_the_export_names_the_extra_that_adds_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "onnxruntime" else object())
    with pytest.raises(ExportError, match=r"needs onnxruntime, not installed here: pip install 'resnet-hub\[onnx\]'"):
        export_onnx(resnet_hub.create("resnet18", num_classes=2), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_the_download_keeps_the_safetensors_zip_when_the_export_fails(tuned, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "export_onnx", lambda *a, **k: (_ for _ in ()).throw(ExportError("it broke")))
    files, note = model_downloads(tuned["resnet18"], tmp_path)
    assert [f.name for f in files] == ["colours.zip"] and note == "No ONNX download: it broke."


def test_the_download_offers_the_zip_and_a_checked_onnx_file(tuned, tmp_path):
    files, note = model_downloads(tuned["resnet18"], tmp_path)
    assert [f.name for f in files] == ["colours.zip", "colours.onnx"]
    assert note.startswith(f"ONNX (opset {ONNX_OPSET}): same top-1 as PyTorch on")


@pytest.mark.parametrize("arch", ARCHS)
def test_timm_loads_a_model_fine_tuned_from_an_imagenet_stem_base_with_the_same_logits(tuned, arch):
    import timm

    ours = resnet_hub.load(tuned[arch], device="cpu")
    theirs = timm.create_model(f"local-dir:{tuned[arch]}", pretrained=True).eval()
    assert type(theirs).__module__.startswith("timm") and theirs.pretrained_cfg["label_names"] == ours.labels
    x = to_tensor_batch(calibration_images("photo", 4), ours.preprocessing)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), atol=1e-5, rtol=1e-5)
    assert theirs.pretrained_cfg["input_size"] == [3, 64, 64]
    assert ours.info.layout == "resnet-hub"  # the timm keys do not change which layout resnet-hub reads


def test_a_small_stem_model_carries_no_timm_keys_that_would_build_the_wrong_network(tmp_path):
    model = resnet_hub.create("resnet18", num_classes=10, stem="small")
    config = json.loads((model.save_pretrained(tmp_path / "small") / "config.json").read_text())
    assert "pretrained_cfg" not in config and "num_classes" not in config


def test_cli_onnx_writes_a_checked_model_onnx_beside_the_weights(tmp_path, capsys):
    from resnet_hub.__main__ import main

    from .test_finetune import CLI_TINY

    assert main(["finetune", *CLI_TINY, "--out", str(tmp_path / "out"), "--onnx", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["onnx"]["opset"] == ONNX_OPSET and summary["onnx"]["top1_agreement"] == 1.0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "config.json", "model.onnx",
                                                                    "model.safetensors", "trained_on.json"]
