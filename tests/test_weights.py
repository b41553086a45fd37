"""Weights: three layouts onto one model, strict loading, the Hub cache, saving and pushing."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import resnet_hub
from resnet_hub import (
    CorruptWeightsError,
    LayoutError,
    PickleRefusedError,
    PushError,
    SourceError,
    UnknownArchitectureError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from resnet_hub.hub import DEFAULT_SOURCES, parse_repo_id

from .conftest import ARCHS, needs_gpu, randomize_batchnorm

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def logits(model, x=X):
    with torch.no_grad():
        return model.eval()(x)


# --- the three layouts ------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_save_then_load_gives_identical_logits_and_metadata(arch, saved_models):
    folder = saved_models[arch]
    model = resnet_hub.load(folder, device="cpu")
    assert model.labels == [f"digit {i}" for i in range(10)]
    again = resnet_hub.load(model.save_pretrained(folder.parent / "again"), device="cpu")
    assert torch.equal(logits(model), logits(again))
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "README.md"}


@pytest.fixture(scope="module")
def timm_folders(tmp_path_factory):
    timm = pytest.importorskip("timm")
    from timm.models import save_for_hf

    out = {}
    for arch in ARCHS:
        torch.manual_seed(0)
        model = randomize_batchnorm(timm.create_model(arch, pretrained=False)).eval()
        model.pretrained_cfg = {**model.pretrained_cfg, "interpolation": "bicubic", "crop_pct": 0.95, "tag": "a1_in1k"}
        folder = tmp_path_factory.mktemp(f"timm-{arch}")
        save_for_hf(model, folder, safe_serialization=True)
        out[arch] = (model, folder)
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_timm_checkpoint_loads_key_for_key_with_its_preprocessing(arch, timm_folders):
    reference, folder = timm_folders[arch]
    model = resnet_hub.load(folder, device="cpu")
    torch.testing.assert_close(logits(model), logits(reference), rtol=1e-5, atol=1e-5)
    assert model.info.layout == "timm"
    assert (model.preprocessing.interpolation, model.preprocessing.crop_pct) == ("bicubic", 0.95)
    assert model.labels[0] == "tench" and len(model.labels) == 1000  # shipped ImageNet names


@pytest.fixture(scope="module")
def transformers_folders(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    out = {}
    for arch in ARCHS:
        basic = arch == "resnet18"
        config = transformers.ResNetConfig(
            depths=[2, 2, 2, 2] if basic else [3, 4, 6, 3],
            layer_type="basic" if basic else "bottleneck",
            hidden_sizes=[64, 128, 256, 512] if basic else [256, 512, 1024, 2048],
            num_labels=4,
            id2label={0: "ant", 1: "bee", 2: "cat", 3: "dog"},
            label2id={"ant": 0, "bee": 1, "cat": 2, "dog": 3},
        )
        torch.manual_seed(0)
        model = randomize_batchnorm(transformers.ResNetForImageClassification(config)).eval()
        folder = tmp_path_factory.mktemp(f"hf-{arch}")
        model.save_pretrained(folder)
        (folder / "preprocessor_config.json").write_text(
            json.dumps({"crop_pct": 0.875, "size": 224, "resample": 3, "image_mean": [0.5] * 3, "image_std": [0.25] * 3})
        )
        out[arch] = (model, folder)
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_transformers_checkpoint_maps_onto_torchvision_names(arch, transformers_folders):
    reference, folder = transformers_folders[arch]
    model = resnet_hub.load(folder, device="cpu")
    with torch.no_grad():
        expected = reference(pixel_values=X).logits
    torch.testing.assert_close(logits(model), expected, rtol=1e-5, atol=1e-5)
    assert model.labels == ["ant", "bee", "cat", "dog"] and model.info.layout == "transformers"
    assert model.preprocessing.interpolation == "bicubic" and model.preprocessing.mean == (0.5, 0.5, 0.5)


# --- the Hugging Face cache, offline --------------------------------------------------------


def test_repo_id_resolves_offline_from_the_hugging_face_cache(hub_cache, saved_models):
    hub_cache.add_folder("someone/digits-resnet18", saved_models["resnet18"])
    model = resnet_hub.load("someone/digits-resnet18", device="cpu")
    assert model.info.source == "someone/digits-resnet18"
    assert torch.equal(logits(model), logits(resnet_hub.load(saved_models["resnet18"], device="cpu")))


def test_revision_after_at_sign_selects_the_cached_branch(hub_cache, saved_models):
    hub_cache.add_folder("someone/net", saved_models["resnet18"], revision="main")
    hub_cache.add_folder("someone/net", saved_models["resnet50"], revision="v2")
    assert resnet_hub.load("someone/net@v2", device="cpu").config.architecture == "resnet50"
    assert resnet_hub.load("someone/net", device="cpu").config.architecture == "resnet18"


def test_default_short_names_point_at_the_timm_a1_pair(hub_cache, timm_folders):
    assert DEFAULT_SOURCES == {"resnet18": "timm/resnet18.a1_in1k", "resnet50": "timm/resnet50.a1_in1k"}
    hub_cache.add_folder("timm/resnet18.a1_in1k", timm_folders["resnet18"][1])
    assert resnet_hub.load("resnet18", device="cpu").info.layout == "timm"


def test_uncached_repo_offline_names_the_repo_and_how_to_get_it(hub_cache):
    with pytest.raises(WeightsNotFoundError, match=r"timm/resnet50\.a1_in1k.*not in the local Hugging Face cache.*hf download"):
        resnet_hub.load("resnet50", device="cpu")


def test_pickle_only_repo_in_the_cache_is_refused(hub_cache, saved_models):
    config = (saved_models["resnet18"] / "config.json").read_bytes()
    hub_cache.add("someone/old-net", {"config.json": config, "pytorch_model.bin": b"\x80\x04not unpickled"})
    with pytest.raises(PickleRefusedError, match=r"only pickle checkpoints \(pytorch_model.bin\).*arbitrary code"):
        resnet_hub.load("someone/old-net", device="cpu")


def test_loading_never_unpickles(monkeypatch, tmp_path, saved_models):
    import pickle

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    resnet_hub.load(saved_models["resnet50"], device="cpu")


# --- devices ------------------------------------------------------------------------------


def test_tensors_land_on_the_requested_device(saved_models):
    model = resnet_hub.load(saved_models["resnet18"], device="cpu")
    assert {p.device.type for p in model.state_dict().values()} == {"cpu"}
    assert all(p.dtype == torch.float32 for p in model.parameters())


@needs_gpu
@pytest.mark.gpu
def test_tensors_load_straight_onto_the_gpu(saved_models):
    model = resnet_hub.load(saved_models["resnet18"])  # default device: cuda when present
    assert {p.device.type for p in model.state_dict().values()} == {"cuda"}
    with torch.no_grad():
        cpu = resnet_hub.load(saved_models["resnet18"], device="cpu")(X)
        torch.testing.assert_close(model(X.cuda()).cpu(), cpu, rtol=1e-3, atol=1e-3)


def test_half_precision_checkpoints_are_loaded_as_float32(tmp_path, saved_models, copy_of):
    folder = copy_of(saved_models["resnet18"])
    tensors = load_file(folder / "model.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, folder / "model.safetensors")
    assert resnet_hub.load(folder, device="cpu").fc.weight.dtype == torch.float32


# --- the one relaxation: a new head ---------------------------------------------------------


def test_new_head_is_reported_and_the_rest_loads_strictly(saved_models, caplog):
    base = resnet_hub.load(saved_models["resnet50"], device="cpu")
    with caplog.at_level(logging.WARNING):
        model = resnet_hub.load(saved_models["resnet50"], device="cpu", num_classes=3, labels=["a", "b", "c"])
    assert model.fc.out_features == 3 and model.labels == ["a", "b", "c"]
    assert "fc.weight and fc.bias" in model.info.notes[0] and "fc.weight" in caplog.text
    assert torch.equal(model.layer4[2].conv3.weight, base.layer4[2].conv3.weight)


# --- bad input ---------------------------------------------------------------------------


def _rewrite_config(folder: Path, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))


def test_unknown_architecture_in_config(saved_models, copy_of):
    folder = copy_of(saved_models["resnet18"])
    cfg = json.loads((folder / "config.json").read_text())
    _rewrite_config(folder, model={**cfg["model"], "architecture": "resnet51"})
    with pytest.raises(UnknownArchitectureError, match="resnet51"):
        resnet_hub.load(folder, device="cpu")


def test_timm_architecture_that_is_not_a_plain_resnet(timm_folders, copy_of):
    folder = copy_of(timm_folders["resnet50"][1])
    _rewrite_config(folder, architecture="resnet50d")
    with pytest.raises(UnknownArchitectureError, match="resnet50d.*not a plain ResNet"):
        resnet_hub.load(folder, device="cpu")


def test_folder_without_config(saved_models, copy_of):
    folder = copy_of(saved_models["resnet18"])
    (folder / "config.json").unlink()
    with pytest.raises(SourceError, match="has no config.json"):
        resnet_hub.load(folder, device="cpu")


def test_missing_folder_is_not_mistaken_for_a_repo_id(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        resnet_hub.load(str(tmp_path / "nowhere" / "model"), device="cpu")


def test_a_file_instead_of_a_folder(saved_models):
    with pytest.raises(SourceError, match="is a file: pass the folder"):
        resnet_hub.load(saved_models["resnet18"] / "model.safetensors", device="cpu")


def test_truncated_safetensors(saved_models, copy_of):
    folder = copy_of(saved_models["resnet18"])
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptWeightsError, match="truncated or corrupt"):
        resnet_hub.load(folder, device="cpu")


def test_garbage_safetensors_header(saved_models, copy_of):
    folder = copy_of(saved_models["resnet18"])
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 12) + b"not json!!!!" + b"\0" * 64)
    with pytest.raises(CorruptWeightsError, match="truncated or corrupt"):
        resnet_hub.load(folder, device="cpu")


def _edit_tensors(folder: Path, edit):
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors")


def test_tensor_of_the_wrong_shape(saved_models, copy_of):
    folder = copy_of(saved_models["resnet18"])
    _edit_tensors(folder, lambda t: t.update({"layer2.0.conv1.weight": torch.zeros(128, 64, 5, 5)}))
    with pytest.raises(WeightsMismatchError, match=r"layer2.0.conv1.weight has shape \(128, 64, 5, 5\).*\(128, 64, 3, 3\)"):
        resnet_hub.load(folder, device="cpu")


def test_missing_keys_are_named(saved_models, copy_of):
    folder = copy_of(saved_models["resnet18"])
    _edit_tensors(folder, lambda t: t.pop("layer3.1.bn2.running_var"))
    with pytest.raises(WeightsMismatchError, match=r"1 missing \(layer3.1.bn2.running_var\)"):
        resnet_hub.load(folder, device="cpu")


def test_extra_keys_are_named(saved_models, copy_of):
    folder = copy_of(saved_models["resnet18"])
    _edit_tensors(folder, lambda t: t.update({"head.extra": torch.zeros(3)}))
    with pytest.raises(WeightsMismatchError, match=r"1 unexpected \(head.extra\)"):
        resnet_hub.load(folder, device="cpu")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights(saved_models, copy_of, bad):
    folder = copy_of(saved_models["resnet18"])

    def poison(t):
        t["layer1.0.conv1.weight"][0, 0, 0, 0] = bad

    _edit_tensors(folder, poison)
    with pytest.raises(CorruptWeightsError, match="layer1.0.conv1.weight holds NaN or Inf"):
        resnet_hub.load(folder, device="cpu")


def test_pickle_only_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet50", "pretrained_cfg": {}}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(PickleRefusedError, match="pytorch_model.bin"):
        resnet_hub.load(tmp_path, device="cpu")


def test_unknown_layout(saved_models, copy_of):
    folder = copy_of(saved_models["resnet18"])
    (folder / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 768}))
    with pytest.raises(LayoutError, match="fits none of the layouts.*timm.*transformers"):
        resnet_hub.load(folder, device="cpu")


def test_config_that_is_not_json(saved_models, copy_of):
    folder = copy_of(saved_models["resnet18"])
    (folder / "config.json").write_text("{not json")
    with pytest.raises(LayoutError, match="not valid JSON"):
        resnet_hub.load(folder, device="cpu")


@pytest.mark.parametrize("source", ["bad name!/x", "org/", "org/na me", "org/name@", "org/name@bad rev", "", "   "])
def test_malformed_repo_ids(source):
    with pytest.raises(SourceError):
        resnet_hub.load(source, device="cpu")


def test_repo_id_parsing():
    assert parse_repo_id("org/name@v1.2") == ("org/name", "v1.2")
    assert parse_repo_id(" org/name ") == ("org/name", None)


# --- saving -------------------------------------------------------------------------------


def test_model_card_has_hub_metadata(saved_models):
    card = (saved_models["resnet50"] / "README.md").read_text()
    front = card.split("---")[1]
    for line in ("library_name: resnet-hub", "license: apache-2.0", "pipeline_tag: image-classification", "- resnet50"):
        assert line in front
    assert "23,528,522 parameters, 10 classes" in card  # ResNet-50 with a 10-class head


def test_card_carries_base_model_metrics_and_confusion_matrix(tmp_path):
    model = resnet_hub.create("resnet18", num_classes=2, labels=["cat", "dog"], stem="small")
    model.info.base_model = "timm/resnet18.a1_in1k"
    model.info.datasets = ["my-pets"]
    model.info.metrics = {"accuracy": 0.875}
    model.info.training = {"hyperparameters": {"lr": 0.01}, "confusion_matrix": [[3, 1], [0, 4]], "data": "8 images"}
    card = (model.save_pretrained(tmp_path / "pets") / "README.md").read_text()
    assert "base_model: timm/resnet18.a1_in1k" in card and "value: 0.875" in card
    assert "| **cat** | 3 | 1 |" in card and "| lr | 0.01 |" in card and "0.8750" in card


def test_a_failed_save_leaves_the_old_folder_untouched_and_no_temporary_files(saved_models, copy_of, monkeypatch):
    folder = copy_of(saved_models["resnet18"])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    model = resnet_hub.create("resnet18")

    def broken_card(_model):
        raise RuntimeError("disk full")

    monkeypatch.setattr(resnet_hub.weights, "render_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        model.save_pretrained(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []


def test_save_refuses_an_existing_folder_unless_overwriting(saved_models):
    with pytest.raises(FileExistsError, match="already exists"):
        resnet_hub.create("resnet18").save_pretrained(saved_models["resnet18"], overwrite=False)


# --- pushing, tested up to the network edge ----------------------------------------------

TOKEN = "hf_" + "s3cr3t" * 6


def test_push_uploads_exactly_the_saved_folder(fake_hub, saved_models):
    model = resnet_hub.load(saved_models["resnet18"], device="cpu")
    url = model.push_to_hub("someone/digits", token=TOKEN)
    assert url.startswith("https://huggingface.co/someone/digits/commit/")
    local = model.save_pretrained(saved_models["resnet18"].parent / "local-copy")
    assert fake_hub.uploaded == {p.name: p.read_bytes() for p in local.iterdir()}
    writes = [r for r in fake_hub.requests if r.url.path.endswith(("/create", "/preupload/main", "/commit/main"))]
    assert len(writes) == 3 and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in writes)


def test_push_failure_never_shows_the_token(fake_hub, saved_models, caplog):
    fake_hub.fail_commit_with = f"internal error for token {TOKEN}"
    model = resnet_hub.load(saved_models["resnet18"], device="cpu")
    with caplog.at_level(logging.DEBUG), pytest.raises(PushError) as err:
        model.push_to_hub("someone/digits", token=TOKEN)
    assert "push to someone/digits failed" in str(err.value)
    assert TOKEN not in str(err.value) and TOKEN not in caplog.text and TOKEN not in repr(err.value)
    assert err.value.__cause__ is None and err.value.__context__ is None


def test_push_without_a_token_is_refused_before_any_request(fake_hub, saved_models):
    model = resnet_hub.load(saved_models["resnet18"], device="cpu")
    with pytest.raises(PushError, match="no Hugging Face token.*hf auth login"):
        model.push_to_hub("someone/digits")
    assert fake_hub.requests == []


@pytest.mark.parametrize("repo_id", ["no-namespace-slash", "someone/bad name", "someone/x@main", "a/b/c"])
def test_push_to_a_malformed_repo_id_is_refused_before_any_request(fake_hub, saved_models, repo_id):
    model = resnet_hub.load(saved_models["resnet18"], device="cpu")
    with pytest.raises(SourceError):
        model.push_to_hub(repo_id, token=TOKEN)
    assert fake_hub.requests == []


# -- label names that repeat: a prediction keyed by name would merge those classes ---------------------------


def test_repeated_label_names_in_resnet_hubs_own_config_are_refused_at_load(saved_models, copy_of):
    folder = copy_of(saved_models["resnet18"])
    _rewrite_config(folder, labels=["cat", "dog", "cat"] + [f"digit {i}" for i in range(3, 10)])
    with pytest.raises(LayoutError, match=r"label names repeat \('cat' for classes 0, 2\)"):
        resnet_hub.load(folder, device="cpu")


def test_repeated_label_names_from_the_hub_are_kept_apart_by_class_index(transformers_folders, copy_of):
    _, original = transformers_folders["resnet18"]
    folder = copy_of(original)
    _rewrite_config(folder, id2label={"0": "crane", "1": "bee", "2": "crane", "3": "dog"})  # as ImageNet's two cranes
    model = resnet_hub.load(folder, device="cpu")
    assert model.labels == ["crane (class 0)", "bee", "crane (class 2)", "dog"]
    assert any("label names repeat" in note for note in model.info.notes)
    from resnet_hub.predict import Predictor

    prediction = Predictor(model, "cpu", "fp32").classify(torch.rand(3, 64, 64).numpy().transpose(1, 2, 0), top_k=4)
    assert len(prediction.as_dict()) == 4


def test_repeated_label_names_are_refused_when_given(saved_models):
    with pytest.raises(ValueError, match="label names repeat"):
        resnet_hub.create("resnet18", num_classes=2, labels=["cat", "cat"])
    with pytest.raises(ValueError, match="label names repeat"):
        resnet_hub.load(saved_models["resnet18"], device="cpu", labels=["x"] * 10)
