"""The service layer without Gradio: which model a name stands for, run names, starter builds, notes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from resnet_hub import store
from resnet_hub.errors import ResNetHubError
from resnet_hub.finetune import FinetuneConfig
from resnet_hub.hub import source_label
from resnet_hub.images import looks_like_photo
from resnet_hub.service import PHOTO_TO_DIGITS, FinetuneJobs, ModelRegistry, ServiceError, StarterBuilds


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RESNET_HUB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def stored(home, saved_models, copy_of) -> Path:
    """A model in the store under the name 'run-one' (what a fine-tune in the app leaves)."""
    import shutil

    folder = store.model_folder("run-one")
    folder.parent.mkdir(parents=True)
    shutil.copytree(saved_models["resnet18"], folder)
    return folder


# -- which model a name stands for --------------------------------------------------------------


@pytest.mark.parametrize("typed", ["run-one", "local:run-one", "  run-one "])
def test_a_store_model_is_found_by_its_name_with_or_without_local(stored, typed):
    assert ModelRegistry(check_hub=False).source_for(typed) == str(stored)


def test_the_app_never_serves_a_server_path_but_the_cli_may(stored):
    with pytest.raises(ServiceError, match="is not a model here"):
        ModelRegistry(check_hub=False).source_for(str(stored))
    assert ModelRegistry(check_hub=False, allow_paths=True).source_for(str(stored)) == str(stored)


def test_an_unknown_name_lists_the_models_in_the_store(stored):
    with pytest.raises(ServiceError, match=r"run-one"):
        ModelRegistry(check_hub=False).source_for("no-such-model")


def test_choices_read_the_store_each_time(home, stored):
    registry = ModelRegistry(check_hub=False)
    assert ("run-one (fine-tuned here)", "local:run-one") in registry.choices()
    import shutil

    shutil.rmtree(stored)
    assert ("run-one (fine-tuned here)", "local:run-one") not in registry.choices()


# -- names of fine-tuned models -------------------------------------------------------------------


def test_runs_without_a_name_are_numbered_past_the_names_taken(home, stored):
    for taken in ("mnist-sample-resnet18", "mnist-sample-resnet18-2"):
        store.model_folder(taken).mkdir(parents=True)
    folder = FinetuneJobs._new_model_folder(None, "mnist-sample", "scratch:resnet18")
    assert folder.name == "mnist-sample-resnet18-3"


def test_a_typed_name_already_in_the_store_is_refused_before_training(home, stored):
    jobs = FinetuneJobs(ModelRegistry(check_hub=False))
    with pytest.raises(ServiceError, match="a model named 'run-one' is already in the store: choose another name"):
        jobs.start("mnist-sample", FinetuneConfig(base="scratch:resnet18"), "run-one")
    assert jobs.active.done.is_set()  # the app's one training slot is free again


def test_a_card_names_its_base_by_name_never_by_its_path():
    assert source_label("/srv/app/store/models/starter-resnet18-mnist") == "starter-resnet18-mnist"
    assert source_label("timm/resnet50.a1_in1k@v2") == "timm/resnet50.a1_in1k@v2"
    assert source_label("resnet18") == "timm/resnet18.a1_in1k"
    assert source_label("scratch:resnet50") == "scratch:resnet50"


# -- photos sent to digit models --------------------------------------------------------------------


def test_photos_look_like_photos_and_digits_do_not():
    import skimage.data

    from resnet_hub.data import mnist_sample

    for name in ("chelsea", "astronaut", "coffee", "rocket", "camera"):
        assert looks_like_photo(Image.fromarray(getattr(skimage.data, name)())), name
    digits = mnist_sample(limit_per_class=10).images
    assert not any(looks_like_photo(d.resize((112, 112), Image.Resampling.NEAREST)) for d in digits)
    sketch = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(sketch).line([(140, 50), (140, 230)], fill="black", width=18)
    assert not looks_like_photo(sketch)


def test_a_digit_model_says_a_photo_answer_means_nothing(home, saved_models):
    import skimage.data

    from resnet_hub.predict import Predictor
    from resnet_hub.service import input_note

    predictor = Predictor(saved_models["resnet18"], "cpu", "fp32")
    predictor.model.info.training["kind"] = "digits"
    photo = Image.fromarray(skimage.data.chelsea())
    assert input_note(photo, predictor).startswith(PHOTO_TO_DIGITS)
    predictor.model.info.training["kind"] = "photo"
    assert input_note(photo, predictor) == ""


# -- the starters, trained in the background ----------------------------------------------------------


@pytest.fixture
def tiny_recipe(home, monkeypatch):
    """Starter recipes that train in seconds, on 10 digits per class; yields a StarterBuilds."""
    from resnet_hub.data import mnist_sample

    tiny = {arch: FinetuneConfig(base=f"scratch:{arch}", epochs=1, image_size=32, batch_size=16)
            for arch in store.STARTER_ARCHS}
    monkeypatch.setattr(store, "STARTER_RECIPE", tiny)
    monkeypatch.setattr(store, "mnist_sample", lambda: mnist_sample(limit_per_class=10))
    builds = StarterBuilds()
    yield builds
    # The background thread goes on to the next starter: let it finish while this test's store is set.
    thread = builds._thread
    if thread is not None:
        thread.join(120)


def test_starters_build_in_the_background_with_progress_and_say_how_long_they_took_here(tiny_recipe):
    builds = tiny_recipe
    assert "waits its turn" in builds.status_text() and builds.building
    seen = []
    builds.start()
    builds.wait("resnet50", on_progress=lambda b: seen.append((b.arch, b.state, b.fraction)), poll_s=0.05)
    builds.wait("resnet18")
    assert not builds.building
    assert any(state == "building" for _, state, _ in seen)
    for arch in store.STARTER_ARCHS:
        assert store.is_model_folder(store.starter_folder(arch))
        measured = json.loads((store.starter_folder(arch) / "config.json").read_text())["training"]["seconds"]
        assert f"trained on this machine in {measured:.0f} s" in builds.builds[arch].describe()
    assert re.search(r"ResNet-18 starter: ready .* · ResNet-50 starter: ready", builds.status_text())
    # A fresh registry finds them stored: nothing to build, and the banner says what they measured.
    assert not StarterBuilds().building


def test_the_cli_trains_only_the_starter_it_asked_for(tiny_recipe):
    builds = tiny_recipe
    builds.wait("resnet50", only=True)
    thread = builds._thread
    if thread is not None:
        thread.join(60)
    assert store.is_model_folder(store.starter_folder("resnet50"))
    assert not store.is_model_folder(store.starter_folder("resnet18"))
    assert builds.builds["resnet18"].state == "queued"


def test_a_starter_deleted_from_the_store_is_built_again(tiny_recipe):
    import shutil

    builds = tiny_recipe
    builds.wait("resnet18")
    shutil.rmtree(store.starter_folder("resnet18"))
    builds.wait("resnet18")
    assert store.is_model_folder(store.starter_folder("resnet18"))


def test_a_failed_starter_build_is_an_error_and_is_retried(tiny_recipe, monkeypatch):
    from resnet_hub import service

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(service, "build_starter", broken)
    builds = tiny_recipe
    with pytest.raises(ServiceError, match="ResNet-18 starter model could not be built: RuntimeError: disk full"):
        builds.wait("resnet18")
    assert "could not be built" in builds.builds["resnet18"].describe()
    monkeypatch.setattr(service, "build_starter", store.build_starter)
    builds.wait("resnet18")
    assert builds.builds["resnet18"].state == "ready"


def test_the_offline_cli_says_a_short_name_serves_a_starter(home, hub_cache):
    note = ModelRegistry(check_hub=False).starter_note("resnet50")
    assert note.startswith("offline: timm/resnet50.a1_in1k is neither on the Hub nor in the local cache")
    assert "starter-resnet50-mnist" in note and "only the digits 0-9" in note


def test_model_names_that_are_not_folder_names_are_refused(home):
    with pytest.raises(ResNetHubError, match="must start with a letter or digit"):
        FinetuneJobs._new_model_folder("../escape", "mnist-sample", "resnet18")
