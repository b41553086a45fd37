"""The service layer without Gradio: which model a name stands for, run names, starter builds, notes."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from resnet_hub import store
from resnet_hub.errors import ResNetHubError
from resnet_hub.finetune import FinetuneConfig
from resnet_hub.hub import source_label
from resnet_hub.images import looks_like_photo
from resnet_hub.errors import ServiceError
from resnet_hub.services import starters
from resnet_hub.services.input_notes import PHOTO_TO_DIGITS
from resnet_hub.services.jobs import FinetuneJobs
from resnet_hub.services.registry import ModelRegistry
from resnet_hub.services.starters import StarterBuilds
from resnet_hub.training_slot import TrainingSlot


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
    jobs = FinetuneJobs(ModelRegistry(check_hub=False), TrainingSlot())
    with pytest.raises(ServiceError, match="a model named 'run-one' is already in the store: choose another name"):
        jobs.start("mnist-sample", FinetuneConfig(base="scratch:resnet18"), "run-one")
    assert not jobs.slot.busy  # the refused run never took a place in line


def test_a_run_naming_no_size_continues_a_model_of_its_data_kind_at_that_models_own_size(home, stored, tmp_path):
    """The app names no size: a 24 px digit starter fine-tuned on the MNIST sample ran at 32 px, where it scored
    66.8% before training against its own 98.3%."""
    import json

    from .test_app import colour_zip

    record = json.loads((stored / "config.json").read_text())
    record["training"] = {**(record.get("training") or {}), "kind": "digits"}
    record["preprocessing"]["input_size"] = 24
    (stored / "config.json").write_text(json.dumps(record))
    jobs = FinetuneJobs(ModelRegistry(check_hub=False), TrainingSlot())
    holder = jobs.slot.enter("another run")  # the runs wait in line: only their settings are looked at
    photos = colour_zip(tmp_path / "c.zip", per_class=6)
    runs = [jobs.start("mnist-sample", FinetuneConfig(base="run-one", epochs=1), "digits-on-digits"),
            jobs.start("mnist-sample", FinetuneConfig(base="scratch:resnet18", epochs=1), "digits-from-scratch"),
            jobs.start(photos, FinetuneConfig(base="run-one", epochs=1), "photos-on-digits"),
            jobs.start("mnist-sample", FinetuneConfig(base="run-one", epochs=1, image_size=40), "size-asked")]
    try:
        assert [job.config.image_size for job in runs] == [24, 32, 128, 40]
    finally:
        for job in runs:
            jobs.cancel(job.id)
        jobs.slot.leave(holder)
        assert all(job.done.wait(60) and (job.result is None or job.result.model is None) for job in runs)


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
    from resnet_hub.services.input_notes import input_note

    predictor = Predictor(saved_models["resnet18"], "cpu", "fp32")
    predictor.model.info.training["kind"] = "digits"
    photo = Image.fromarray(skimage.data.chelsea())
    assert input_note(photo, predictor).startswith(PHOTO_TO_DIGITS)
    predictor.model.info.training["kind"] = "photo"
    assert input_note(photo, predictor) == ""


def test_a_photo_sent_to_two_digit_models_is_one_notice_naming_both_in_order(home, saved_models, monkeypatch):
    import skimage.data

    from resnet_hub.services import input_notes as service
    from resnet_hub.images import looks_like_photo
    from resnet_hub.predict import Predictor
    from resnet_hub.services.input_notes import input_note, input_notes

    a, b = (Predictor(saved_models[arch], "cpu", "fp32") for arch in ("resnet18", "resnet50"))
    for predictor in (a, b):
        predictor.model.info.training["kind"] = "digits"
    photo = Image.fromarray(skimage.data.chelsea())
    looked = []
    monkeypatch.setattr(service, "looks_like_photo", lambda p: looked.append(p) or looks_like_photo(p))
    notes = input_notes(photo, [a, b])
    assert looked == [photo]  # the picture is judged once for both models
    assert len(notes) == 1 and notes[0].startswith(f"{PHOTO_TO_DIGITS}: {a.name} and {b.name} know only the digits")
    assert input_notes(photo, [b]) == [input_note(photo, b)]  # one model: its own notice, naming it
    assert input_notes(photo, [b, b]) == [input_note(photo, b)]  # the same model twice: not "b and b know"


def test_a_tiny_or_blank_image_is_said_to_show_nothing_on_any_model(home, saved_models):
    """A 1x1 picture got "1", 86%, from the digit starter, with only the note that it was centred like a digit."""
    from resnet_hub.data import mnist_sample
    from resnet_hub.predict import Predictor
    from resnet_hub.services.input_notes import NOTHING_TO_SEE, input_note, input_notes

    a, b = (Predictor(saved_models[arch], "cpu", "fp32") for arch in ("resnet18", "resnet50"))
    a.model.info.training["kind"] = "digits"
    tiny, grey = Image.new("RGB", (1, 1)), Image.new("RGB", (64, 64), (120, 124, 118))
    for picture, why in ((tiny, "it is 1x1 px"), (grey, "it is a single shade")):
        for predictor in (a, b):  # a digit model and a photo model alike
            assert input_note(picture, predictor) == f"{NOTHING_TO_SEE}: {why}, so any answer is a guess"
        assert input_notes(picture, [a, b]) == [input_note(picture, a)]  # said once for both
    digit = mnist_sample(limit_per_class=1).images[3]  # 28x28, ink on black
    assert not input_note(digit, a).startswith(NOTHING_TO_SEE) and input_note(digit, b) == ""


# -- the starters, trained in the background ----------------------------------------------------------


@pytest.fixture
def tiny_recipe(home, monkeypatch):
    """Starter recipes that train in seconds, on 10 digits per class; yields a StarterBuilds."""
    from resnet_hub.data import mnist_sample

    tiny = {arch: FinetuneConfig(base=f"scratch:{arch}", epochs=1, image_size=32, batch_size=16)
            for arch in store.STARTER_ARCHS}
    monkeypatch.setattr(starters, "STARTER_RECIPE", tiny)
    monkeypatch.setattr(starters, "mnist_sample", lambda: mnist_sample(limit_per_class=10))
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
    real_build = starters.build_starter

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(starters, "build_starter", broken)
    builds = tiny_recipe
    with pytest.raises(ServiceError, match="ResNet-18 starter model could not be built: RuntimeError: disk full"):
        builds.wait("resnet18")
    assert "could not be built" in builds.builds["resnet18"].describe()
    monkeypatch.setattr(starters, "build_starter", real_build)
    builds.wait("resnet18")
    assert builds.builds["resnet18"].state == "ready"


def test_the_offline_cli_says_a_short_name_serves_a_starter(home, hub_cache):
    note = ModelRegistry(check_hub=False).starter_note("resnet50")
    assert note.startswith("offline: timm/resnet50.a1_in1k is neither on the Hub nor in the local cache")
    assert "starter-resnet50-mnist" in note and "only the digits 0-9" in note


def test_model_names_that_are_not_folder_names_are_refused(home):
    with pytest.raises(ResNetHubError, match="must start with a letter or digit"):
        FinetuneJobs._new_model_folder("../escape", "mnist-sample", "resnet18")


# -- many visitors on one Space: whose models, whose token, bounded memory, one training at a time ----------------

ALICE, BOB = "a" * 32, "b" * 32  # browser ids, as gr.BrowserState keeps them


def visitor(browser_id: str, **kwargs):
    from resnet_hub.owners import Visitor

    return Visitor.on_space(browser_id=browser_id, **kwargs)


def save_tiny(folder: Path, labels=("red", "blue")) -> Path:
    """A ResNet-18 four channels wide: a real model in Hub layout, small enough to load 200 times."""
    import resnet_hub

    model = resnet_hub.create("resnet18", num_classes=len(labels), labels=list(labels), width=4)
    return model.save_pretrained(folder)


def test_two_visitors_may_both_call_a_model_my_pets_and_each_sees_only_their_own(home):
    registry = ModelRegistry(check_hub=False)
    alice, bob = visitor(ALICE), visitor(BOB)
    mine = save_tiny(store.model_folder("my-pets", alice), labels=("cat", "dog"))
    theirs = save_tiny(store.model_folder("my-pets", bob), labels=("hamster", "fish"))

    assert mine != theirs and mine.is_dir() and theirs.is_dir()
    assert registry.source_for("local:my-pets", alice) == str(mine)
    assert registry.source_for("my-pets", bob) == str(theirs)
    assert ("my-pets (fine-tuned here)", "local:my-pets") in registry.choices(alice)
    stranger = visitor("c" * 32)
    assert [v for _, v in registry.choices(stranger)] == ["resnet18", "resnet50"]
    with pytest.raises(ServiceError, match="my-pets is not one of your models"):
        registry.source_for("local:my-pets", stranger)
    with pytest.raises(ServiceError, match="is not a model here"):
        registry.source_for("my-pets", stranger)


def test_locally_the_one_user_sees_every_model_in_the_store(home, stored):
    registry = ModelRegistry(check_hub=False)
    save_tiny(store.model_folder("visitors-model", visitor(ALICE)))
    assert ("run-one (fine-tuned here)", "local:run-one") in registry.choices()
    assert "local:visitors-model" not in [v for _, v in registry.choices()]  # a Space's visitors' are theirs


def test_a_browser_id_is_taken_only_when_unguessable_and_a_login_keeps_this_browsers_models():
    assert visitor("../../models").owners == ("nobody",)
    assert visitor("hf-alice").owners == ("nobody",)
    assert visitor(ALICE, hf_login="alice").owners == ("hf-alice", f"browser-{ALICE}")
    assert not visitor(None).can_own


def test_visitors_models_are_removed_after_the_retention_time_and_the_shared_store_never(home, stored):
    import os
    import time

    old = save_tiny(store.model_folder("old-pets", visitor(ALICE)))
    new = save_tiny(store.model_folder("new-pets", visitor(ALICE)))
    day_ago = time.time() - 25 * 3600
    os.utime(old / "config.json", (day_ago, day_ago))
    os.utime(stored / "config.json", (day_ago, day_ago))

    assert store.remove_expired(24 * 3600) == [old]
    assert not old.exists() and new.is_dir() and stored.is_dir()


def test_200_typed_repo_ids_leave_the_loaded_models_and_the_lock_table_bounded(home, fake_hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from resnet_hub.services.registry import MAX_LOADED_MODELS

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    tiny = save_tiny(tmp_path / "tiny")
    for i in range(200):
        fake_hub.add_model(f"someone/tiny-{i}", tiny)
    registry = ModelRegistry(check_hub=False, device="cpu", precision="fp32")
    bob = visitor(BOB)
    for i in range(200):
        registry.predictor(f"someone/tiny-{i}", visitor=bob)
        assert registry.loaded()["models"] <= MAX_LOADED_MODELS
    held = registry.loaded()
    assert held["models"] == MAX_LOADED_MODELS and held["locks"] == 0
    assert 0 < held["bytes"] <= registry.max_bytes

    fetched = len(fake_hub.requests)
    registry.predictor("someone/tiny-199", visitor=bob)  # the most recent is still loaded: no new request
    assert len(fake_hub.requests) == fetched


def test_loaded_models_are_bounded_by_bytes_too(home):
    alice = visitor(ALICE)
    for i in range(4):
        save_tiny(store.model_folder(f"m{i}", alice))
    probe = ModelRegistry(check_hub=False, device="cpu", precision="fp32")
    probe.predictor("local:m0", visitor=alice)
    one = probe.loaded()["bytes"]
    registry = ModelRegistry(check_hub=False, device="cpu", precision="fp32", max_bytes=int(2.5 * one))
    for i in range(4):
        registry.predictor(f"local:m{i}", visitor=alice)
    assert registry.loaded()["models"] == 2 and registry.loaded()["bytes"] <= 2.5 * one


def test_the_defaults_are_never_evicted(home, tmp_path):
    starter = save_tiny(store.starter_folder("resnet18"))  # before the registry: it is ready, nothing trains
    registry = ModelRegistry(check_hub=False, device="cpu", precision="fp32", max_models=2)
    registry._offline_reason = "offline (test)"
    alice = visitor(ALICE)
    first = registry.predictor("resnet18", visitor=alice)
    for i in range(4):
        save_tiny(store.model_folder(f"m{i}", alice))
        registry.predictor(f"local:m{i}", visitor=alice)
    assert registry.loaded()["models"] == 3 and registry.predictor("resnet18", visitor=alice) is first
    assert registry.source_for("resnet18") == str(starter)


def test_a_typed_private_repo_is_fetched_without_the_process_token(home, fake_hub, tmp_path, monkeypatch, saved_models):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_TOKEN", "hf_the_space_owners_secret")
    fake_hub.add_model("owner/private-resnet", save_tiny(tmp_path / "tiny"), private=True)
    registry = ModelRegistry(check_hub=False, device="cpu", precision="fp32")
    with pytest.raises(ResNetHubError, match="or it is private.*log in with the Hugging Face button"):
        registry.predictor("owner/private-resnet", visitor=visitor(BOB))
    with pytest.raises(ResNetHubError, match="or it is private"):
        registry.base_source("owner/private-resnet", visitor=visitor(BOB))
    assert fake_hub.requests and fake_hub.authorized() == []


def test_a_model_fetched_with_a_visitors_own_token_serves_only_that_visitor(home, fake_hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    fake_hub.add_model("alice/private-resnet", save_tiny(tmp_path / "tiny"), private=True)
    registry = ModelRegistry(check_hub=False, device="cpu", precision="fp32")
    registry.predictor("alice/private-resnet", visitor=visitor(ALICE, hf_login="alice", token="hf_alice_oauth"))
    with pytest.raises(ResNetHubError, match="or it is private"):
        registry.predictor("alice/private-resnet", visitor=visitor(BOB))  # not served from Alice's cached copy


def test_a_second_finetune_waits_in_line_shows_its_place_and_then_runs_by_itself(home, tmp_path):
    from .test_app import colour_zip

    data = colour_zip(tmp_path / "colours.zip", per_class=6)
    slot = TrainingSlot()
    jobs = FinetuneJobs(ModelRegistry(check_hub=False), slot)
    lab = slot.enter("the lab's degradation run")  # the slot is taken: both fine-tunes queue behind it
    config = lambda: FinetuneConfig(base="scratch:resnet18", epochs=1, image_size=32, batch_size=8)  # noqa: E731
    first = jobs.start(data, config(), "first", visitor=visitor(ALICE))
    second = jobs.start(data, config(), "second", visitor=visitor(BOB))
    assert (jobs.position(first), jobs.position(second)) == (1, 2)
    assert not first.done.wait(1.0) and first.events.empty()  # nothing trains while it waits

    slot.leave(lab)
    assert first.done.wait(240) and first.error is None, first.error
    assert second.done.wait(240) and second.error is None, second.error
    assert store.stored_model("first", visitor(ALICE)) and store.stored_model("second", visitor(BOB))
    assert not slot.busy


needs_openvino = pytest.mark.skipif(bool(__import__("resnet_hub.engines").engines.openvino_available()),
                                    reason="OpenVINO does not run here")


@pytest.fixture
def empty_engine_cache(tmp_path, monkeypatch) -> Path:
    """An engine cache with nothing converted yet, on disk or in this process."""
    from resnet_hub.engines import openvino_engine

    monkeypatch.setenv("RESNET_HUB_ENGINE_CACHE", str(tmp_path / "engine-cache"))
    monkeypatch.setattr(openvino_engine, "_CONVERTED", {})
    return tmp_path / "engine-cache"


def assert_read_its_frozen_part(notes: list[str]) -> None:
    """The run's cache came from a converted OpenVINO part, not from torch (a 12-image run alone would run torch)."""
    note = next(n for n in notes if n.startswith("frozen part"))
    assert note.startswith("frozen part on OpenVINO") and ("(already loaded in" in note  # this process converted it
                                                           or "(read from the engine cache in" in note), note


@needs_openvino
def test_after_a_run_too_short_to_convert_its_frozen_part_the_next_run_on_the_base_reads_it(home, stored, tmp_path,
                                                                                          empty_engine_cache):
    from .test_app import colour_zip

    data = colour_zip(tmp_path / "colours.zip", per_class=6)
    slot = TrainingSlot()
    jobs = FinetuneJobs(ModelRegistry(check_hub=False), slot, prepare_frozen_parts=True)
    config = lambda: FinetuneConfig(base="run-one", freeze=3, epochs=1, image_size=32, batch_size=8)  # noqa: E731
    first = jobs.start(data, config(), "first")
    assert first.done.wait(240) and first.error is None, first.error
    assert not any(n.startswith("frozen part") for n in first.result.model.info.notes)  # 12 images: torch ran it
    jobs.preparing.join(240)  # its own turn on the slot, after the run
    assert not jobs.preparing.is_alive() and not slot.busy
    assert list(empty_engine_cache.glob("openvino-*/manifest.json"))
    second = jobs.start(data, config(), "second")
    assert second.done.wait(240) and second.error is None, second.error
    assert_read_its_frozen_part(second.result.model.info.notes)
    jobs.preparing.join(60)  # nothing left to prepare: returns at once
    assert not slot.busy


@needs_openvino
def test_bases_prepared_at_start_make_the_first_runs_on_them_read_their_frozen_parts(home, stored, tmp_path,
                                                                                     empty_engine_cache):
    from .test_app import colour_zip

    data = colour_zip(tmp_path / "colours.zip", per_class=6)
    slot = TrainingSlot()
    jobs = FinetuneJobs(ModelRegistry(check_hub=False), slot)
    visitor_run = slot.enter("a visitor's run")  # preparing waits for a free slot, never ahead of a visitor
    jobs.prepare_bases(["run-one"], 32)
    time.sleep(1)
    assert slot.position(visitor_run) == 0 and slot.waiting == 0
    assert not list(empty_engine_cache.glob("openvino-*/manifest.json"))
    slot.leave(visitor_run)
    jobs.preparing_bases.join(240)
    assert not jobs.preparing_bases.is_alive() and not slot.busy
    for freeze, stages in ((None, "stem and layer1..layer3"), (4, "stem and layer1..layer4")):
        job = jobs.start(data, FinetuneConfig(base="run-one", freeze=freeze, epochs=1, image_size=32, batch_size=8))
        assert job.done.wait(240) and job.error is None, job.error
        notes = job.result.model.info.notes
        assert any(stages in n for n in notes), notes  # the default freeze for a small photo set, then head only
        assert_read_its_frozen_part(notes)


@needs_openvino
def test_on_a_zerogpu_space_the_bases_are_not_prepared_for_a_cpu_their_runs_never_use(home, stored, monkeypatch,
                                                                                      empty_engine_cache):
    """There CUDA is attached only inside @spaces.GPU, where the fine-tunes run and torch computes the frozen part:
    converting CPU parts at start cost ~14 s of the Space's CPU for nothing."""
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    slot = TrainingSlot()
    jobs = FinetuneJobs(ModelRegistry(check_hub=False), slot)
    jobs.prepare_bases(["run-one"], 32)
    jobs.preparing_bases.join(240)
    assert not jobs.preparing_bases.is_alive() and not slot.busy
    assert not list(empty_engine_cache.glob("openvino-*/manifest.json"))


@needs_openvino
def test_closed_jobs_prepare_nothing_more_and_leave_no_preparation_running(home, stored, empty_engine_cache):
    """What the test harness does before it restores the environment an app read: a preparation left running
    went on to build starters in the user's own store, and the process aborted at exit inside it."""
    slot = TrainingSlot()
    jobs = FinetuneJobs(ModelRegistry(check_hub=False), slot)
    visitor_run = slot.enter("a visitor's run")
    jobs.prepare_bases(["run-one"], 32)  # waits for the slot
    time.sleep(1)
    start = time.perf_counter()
    jobs.close()
    assert not jobs.preparing_bases.is_alive() and time.perf_counter() - start < 10
    slot.leave(visitor_run)
    time.sleep(1)
    assert not slot.busy and not list(empty_engine_cache.glob("openvino-*/manifest.json"))


def test_a_finetune_stopped_in_line_leaves_it_and_trains_nothing(home, tmp_path):
    from .test_app import colour_zip

    slot = TrainingSlot()
    jobs = FinetuneJobs(ModelRegistry(check_hub=False), slot)
    holder = slot.enter("another run")
    job = jobs.start(colour_zip(tmp_path / "c.zip", per_class=6), FinetuneConfig(base="scratch:resnet18", epochs=1),
                     "never", visitor=visitor(ALICE))
    assert jobs.stop(job.id)
    assert job.done.wait(10) and job.result is None and job.error is None
    assert slot.position(job.ticket) == -1 and slot.position(holder) == 0
    assert store.stored_model("never", visitor(ALICE)) is None


def test_a_pushed_card_names_no_uploaded_file_unless_asked(home, tmp_path, fake_hub):
    from resnet_hub.data import read_zip
    from resnet_hub.finetune import finetune
    from resnet_hub.services.publish import push_stored_model

    from .test_app import colour_zip

    data = read_zip(colour_zip(tmp_path / "holiday-photos-of-my-kids.zip", per_class=6))
    result = finetune(data, FinetuneConfig(base="scratch:resnet18", epochs=1, image_size=32, batch_size=8))
    folder = result.save(store.model_folder("pets", visitor(ALICE)))
    assert "holiday-photos-of-my-kids" in (folder / "README.md").read_text()  # the visitor's own copy keeps it

    push_stored_model(folder, "alice/pets", "hf_alice_write")
    card = fake_hub.uploaded["README.md"].decode()
    assert "holiday-photos-of-my-kids" not in card and ".png" not in card
    assert "file names are not published" in card and "# pets" in card
    assert "red" in card and "blue" in card  # the classes are the model's own

    fake_hub.uploaded.clear()
    push_stored_model(folder, "alice/pets", "hf_alice_write", include_data_names=True)
    assert "holiday-photos-of-my-kids" in fake_hub.uploaded["README.md"].decode()


def _wait_for_a_step(job, timeout_s: float = 240.0) -> None:
    import queue as queue_module
    import time as time_module

    deadline = time_module.monotonic() + timeout_s
    while time_module.monotonic() < deadline:
        try:
            event = job.events.get(timeout=1.0)
        except queue_module.Empty:
            continue
        if event is None or event.kind == "step":
            return
    raise AssertionError("the run took no step")


@pytest.mark.parametrize("how", ["stop", "cancel"])
def test_stop_saves_what_the_run_learned_and_cancel_saves_nothing(home, tmp_path, how):
    from .test_app import colour_zip

    jobs = FinetuneJobs(ModelRegistry(check_hub=False), TrainingSlot())
    config = FinetuneConfig(base="scratch:resnet18", epochs=50, image_size=32, batch_size=8)
    job = jobs.start(colour_zip(tmp_path / "c.zip", per_class=8), config, "halfway", visitor=visitor(ALICE))
    _wait_for_a_step(job)
    assert getattr(jobs, how)(job.id)
    assert job.done.wait(120) and job.error is None, job.error
    folder = store.stored_model("halfway", visitor(ALICE))
    siblings = [p.name for p in folder.parent.iterdir()] if folder else []
    assert not any(name.startswith(".") for name in siblings)  # no half-written temporary folder either way
    if how == "cancel":
        assert folder is None and job.result.model is None and jobs.review(job.id) is None
        return
    stopped = json.loads((folder / "config.json").read_text())["training"]["stopped"]
    assert stopped["reason"] == "stopped on request" and 1 <= stopped["step"] < stopped["total_steps"]
    review = jobs.review(job.id, visitor(ALICE))
    assert review is not None and review.results.classes == job.dataset.classes
    assert jobs.review(job.id, visitor(BOB)) is None  # another visitor's mistakes are not shown


@pytest.mark.parametrize("how", ["stop", "cancel"])
def test_only_the_visitor_who_started_a_finetune_may_stop_or_cancel_it(home, tmp_path, how):
    from .test_app import colour_zip

    jobs = FinetuneJobs(ModelRegistry(check_hub=False), TrainingSlot())
    config = FinetuneConfig(base="scratch:resnet18", epochs=50, image_size=32, batch_size=8)
    job = jobs.start(colour_zip(tmp_path / "c.zip", per_class=8), config, "alices", visitor=visitor(ALICE))
    _wait_for_a_step(job)
    assert not getattr(jobs, how)(job.id, visitor(BOB))
    assert not job.done.wait(2) and not job.stop.is_set() and not job.cancel.is_set()
    assert getattr(jobs, how)(job.id, visitor(ALICE))
    assert job.done.wait(120) and job.error is None, job.error


def test_only_the_visitor_who_started_a_live_lab_run_may_stop_it(home):
    from resnet_hub.lab import GradientSettings
    from resnet_hub.services.lab_runs import LabRuns

    slot = TrainingSlot()
    runs = LabRuns(slot)
    holder = slot.enter("a fine-tune")  # the run waits in line, so it is still going when the stops come
    try:
        run = runs.start("gradients", GradientSettings(depths=(8,), width=2, batch_size=8, seed=0), visitor(ALICE))
        assert runs.running(visitor(ALICE)) is run and runs.running(visitor(BOB)) is None
        assert not runs.stop(visitor(BOB)) and not run.stop.is_set()
        assert runs.stop(visitor(ALICE)) and run.done.wait(30) and run.waited
    finally:
        slot.leave(holder)


def test_a_model_whose_run_was_stopped_is_marked_so_in_the_choosers(home, tmp_path):
    import dataclasses

    from resnet_hub.data import read_zip
    from resnet_hub.finetune import finetune

    from .test_app import colour_zip

    data = read_zip(colour_zip(tmp_path / "c.zip", per_class=6))
    config = FinetuneConfig(base="scratch:resnet18", epochs=1, image_size=32, batch_size=8)
    finetune(data, config).save(store.model_folder("whole"))
    stop = threading.Event()  # set at the first step: what it learned is validated and kept, marked as stopped
    result = finetune(data, dataclasses.replace(config, epochs=5), stop=stop,
                      on_event=lambda e: e.kind == "step" and stop.set())
    result.save(store.model_folder("halfway"))
    labels = dict((value, label) for label, value in ModelRegistry(check_hub=False).choices())
    assert labels["local:whole"] == "whole (fine-tuned here)"
    assert labels["local:halfway"] == "halfway (fine-tuned here, stopped early)"
