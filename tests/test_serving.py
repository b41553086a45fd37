"""The first answer comes at once: a model never served here answers on the plain torch path while its engine is
chosen in the background, and later answers come from the engine chosen."""

from __future__ import annotations

import threading

import pytest
import torch

from resnet_hub.examples import check_images
from resnet_hub.predict import Predictor
from resnet_hub.serving import BACKGROUND_CHOICES, PendingChoice
from resnet_hub.weights import create


def small_resnet():
    torch.manual_seed(0)
    model = create("resnet18", num_classes=3, labels=["a", "b", "c"]).eval()
    model.info.preprocessing = type(model.info.preprocessing)(input_size=32, crop_pct=1.0)
    return model


@pytest.fixture
def held_worker():
    """The background worker kept busy until the test lets it go: the first answer is then surely before the choice."""
    release = threading.Event()
    BACKGROUND_CHOICES.submit(lambda: release.wait(60), "a test's blocker")
    yield release
    release.set()


def test_the_first_answer_comes_from_torch_and_later_ones_from_the_engine_chosen(tmp_path, held_worker):
    empty_cache = tmp_path / "engine-cache"
    picture = check_images("photo", 1)[0][0]
    predictor = Predictor(small_resnet(), "cpu", cache_dir=empty_cache, background=True)
    first = predictor.classify(picture)
    assert first.engine == "torch fp32"
    assert predictor.choosing and isinstance(predictor.engine_choice, PendingChoice)
    assert "being chosen in the background" in predictor.engine_choice.summary()
    held_worker.set()
    assert predictor.wait_for_engine(timeout=300)
    choice = predictor.engine_choice
    assert not isinstance(choice, PendingChoice) and choice.candidates  # made: every candidate checked and timed
    assert any(c.b1_ms is not None for c in choice.candidates)
    later = predictor.classify(picture)
    assert later.engine == choice.chosen == predictor.engine_name
    assert later.class_ids[0] == first.class_ids[0]
    assert any(empty_cache.glob("choice-*.json"))  # the choice is kept for the next start


def test_without_background_the_choice_is_made_before_the_first_answer(tmp_path):
    predictor = Predictor(small_resnet(), "cpu", cache_dir=tmp_path)
    assert not predictor.choosing and predictor.engine_choice.candidates
    assert predictor.classify(check_images("photo", 1)[0][0]).engine == predictor.engine_choice.chosen


def test_a_named_precision_is_built_at_once_even_in_background_mode(tmp_path):
    predictor = Predictor(small_resnet(), "cpu", "fp32", engine="torch", cache_dir=tmp_path, background=True)
    assert not predictor.choosing and predictor.engine_choice.forced


def test_the_registry_says_which_engine_answered_while_the_choice_is_made(tmp_path, held_worker, monkeypatch):
    from resnet_hub.services.registry import ModelRegistry

    monkeypatch.setenv("RESNET_HUB_ENGINE_CACHE", str(tmp_path / "engine-cache"))
    small_resnet().save_pretrained(tmp_path / "m")
    registry = ModelRegistry(check_hub=False, allow_paths=True, device="cpu")
    answer = registry.classify(check_images("photo", 1)[0][0], str(tmp_path / "m"), heatmap=False)
    assert answer.engine == "torch fp32"
    assert "chosen in the background" in answer.engine_note
    held_worker.set()
    registry.predictor(str(tmp_path / "m")).wait_for_engine(timeout=300)
    again = registry.classify(check_images("photo", 1)[0][0], str(tmp_path / "m"), heatmap=False)
    assert again.engine == registry.predictor(str(tmp_path / "m")).engine_choice.chosen and again.engine_note == ""


def test_a_stopped_choice_skips_the_candidates_left_and_caches_nothing(tmp_path):
    from resnet_hub.engines import EngineError, choose, weights_key
    from resnet_hub.serving import default_calibration, default_check_images

    model = small_resnet()
    stop = threading.Event()
    stop.set()
    check, what = default_check_images(model)
    with pytest.raises(EngineError, match="stopped before every candidate"):
        choose(model, torch.device("cpu"), engine="auto", calibration=default_calibration(model), check_images=check,
               trained=False, check_set=what, cache_dir=tmp_path, weights_key=weights_key(model), stop=stop)
    assert not any(tmp_path.glob("choice-*.json"))


def test_requests_served_while_int8_is_traced_in_another_thread_run_as_usual():
    """FX's tracing patches nn.Module for the whole process; a request during it ran into the tracer."""
    from resnet_hub.engines import TorchEngine, quantize_int8

    serving = TorchEngine(small_resnet(), torch.device("cpu"), "fp32")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    want = serving(x)[0]
    done, errors, runs = threading.Event(), [], [0]

    def serve():
        while not done.is_set():
            try:
                assert torch.allclose(serving(x)[0], want, atol=1e-5)
                runs[0] += 1
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        for _ in range(3):
            quantize_int8(small_resnet(), torch.randn(4, 3, 32, 32))
    finally:
        done.set()
        thread.join()
    assert errors == [] and runs[0] > 0


def test_a_failed_background_choice_keeps_torch_serving_and_says_why(tmp_path, monkeypatch):
    import resnet_hub.serving as serving

    def broken(*args, **kwargs):
        raise RuntimeError("no room to convert")

    monkeypatch.setattr(serving, "build_engine", broken)
    predictor = Predictor(small_resnet(), "cpu", cache_dir=tmp_path, background=True)
    predictor.classify(check_images("photo", 1)[0][0])
    assert predictor.wait_for_engine(timeout=60)
    assert predictor.engine_name == "torch fp32" and "no room to convert" in predictor.engine_choice.summary()
    assert predictor.classify(check_images("photo", 1)[0][0]).engine == "torch fp32"


def test_a_model_fine_tuned_in_the_app_has_its_engine_chosen_right_after_training(tmp_path, monkeypatch):
    from resnet_hub.finetune import FinetuneConfig
    from resnet_hub.services.jobs import FinetuneJobs
    from resnet_hub.services.registry import ModelRegistry
    from resnet_hub.training_slot import TrainingSlot

    from .test_app import colour_zip

    monkeypatch.setenv("RESNET_HUB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RESNET_HUB_ENGINE_CACHE", str(tmp_path / "engine-cache"))
    jobs = FinetuneJobs(ModelRegistry(check_hub=False, device="cpu"), TrainingSlot())
    job = jobs.start(colour_zip(tmp_path / "c.zip", per_class=12),
                     FinetuneConfig(base="scratch:resnet18", epochs=1, image_size=32), "colours")
    assert job.done.wait(300) and job.error is None, job.error
    assert BACKGROUND_CHOICES.wait_idle(300)
    assert any((tmp_path / "engine-cache").glob("choice-*.json"))  # chosen with no one asking
    served = Predictor(str(job.folder), "cpu", cache_dir=tmp_path / "engine-cache")
    assert served.engine_choice.from_cache  # its first service reads the choice and re-checks it
