"""Many images in: the streaming reader, batch rows and their CSV, evaluation of a labelled set against
scikit-learn, "not sure", folders naming no class, the training-data overlap, and the CLI. Real zips, real
safetensors folders, no network."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

import resnet_hub
from resnet_hub import Preprocessing
from resnet_hub.__main__ import main
from resnet_hub.batch import NOT_SURE, BatchError, classify_batch
from resnet_hub.errors import DataError
from resnet_hub.evaluation import ClassMatch, evaluate
from resnet_hub.image_stream import NOT_AN_IMAGE, plan_stream, stream_images
from resnet_hub.predict import Predictor
from resnet_hub.set_comparison import compare_on_data

from .conftest import randomize_batchnorm

CLASSES = ["cat", "coffee", "rocket"]
PHOTOS = {"cat": skdata.chelsea, "coffee": skdata.coffee, "rocket": skdata.rocket}


def _jpeg(array, angle=0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).rotate(angle).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = resnet_hub.create("resnet18", num_classes=3, labels=CLASSES,
                              preprocessing=Preprocessing(input_size=64, crop_pct=0.875))
    return randomize_batchnorm(model).save_pretrained(tmp_path_factory.mktemp("batch") / "m18")


@pytest.fixture(scope="module")
def predictor(model_folder) -> Predictor:
    return Predictor(model_folder, "cpu", "fp32", cache_dir=None)


@pytest.fixture(scope="module")
def labelled_zip(tmp_path_factory) -> Path:
    """3 classes x 3 photos, inside one wrapping folder, with a corrupt JPEG in the middle and macOS junk."""
    path = tmp_path_factory.mktemp("zips") / "set.zip"
    with zipfile.ZipFile(path, "w") as z:
        for cls, photo in PHOTOS.items():
            for i in range(3):
                z.writestr(f"set/{cls.upper() if cls == 'cat' else cls}/{i}.jpg", _jpeg(photo(), 15 * i))
        z.writestr("set/coffee/1b-broken.jpg", b"\xff\xd8\xff\xe0 this JPEG stops here")
        z.writestr("__MACOSX/set/._0.jpg", b"junk")
    return path


def test_the_stream_reads_class_folders_and_a_corrupt_image_is_its_own_item(labelled_zip):
    plan = plan_stream([labelled_zip])
    assert plan.folders == ["CAT", "coffee", "rocket"]
    assert plan.skipped == {"junk": ["__MACOSX/set/._0.jpg"]}
    items = [item for chunk in stream_images(plan, chunk=4) for item in chunk]
    assert [i.name for i in items] == [e.name for e in plan.entries] and len(items) == 10
    broken = [i for i in items if i.error]
    assert [i.name for i in broken] == ["set/coffee/1b-broken.jpg"] and "corrupt" in broken[0].error
    assert all(i.image is not None for i in items if not i.error)


def test_the_stream_holds_at_most_two_chunks_of_decoded_images(labelled_zip):
    decoded = []

    def prepare(data, name):
        decoded.append(name)
        return name

    seen = 0
    for chunk in stream_images([labelled_zip], prepare=prepare, chunk=2, workers=1):
        seen += len(chunk)
        assert len(decoded) - seen <= 2  # this chunk handed over, at most the next one decoding


def test_a_zip_with_no_images_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__MACOSX/._a.jpg", b"junk")
        z.writestr("notes/.DS_Store", b"junk")
    with pytest.raises(DataError, match="empty.zip holds no images"):
        plan_stream([path])


def test_a_zip_that_is_no_zip_or_a_missing_path_is_a_clear_error(tmp_path):
    fake = tmp_path / "photos.zip"
    fake.write_text("<html>Not found</html>")
    with pytest.raises(DataError, match="photos.zip is not a readable zip file"):
        plan_stream([fake])
    with pytest.raises(DataError, match="does not exist"):
        plan_stream([tmp_path / "nowhere"])


def test_a_folder_of_class_folders_reads_as_its_zip_does(tmp_path, labelled_zip):
    with zipfile.ZipFile(labelled_zip) as z:
        z.extractall(tmp_path / "unzipped")
    (tmp_path / "unzipped" / "set" / "README.txt").write_text("my test set")
    plan = plan_stream([tmp_path / "unzipped"])
    assert plan.folders == plan_stream([labelled_zip]).folders
    assert plan.skipped[NOT_AN_IMAGE] == ["unzipped/set/README.txt"]


def test_a_flat_zip_is_read_without_classes(tmp_path):
    path = tmp_path / "flat.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.jpg", _jpeg(skdata.chelsea()))
        z.writestr("b.jpg", _jpeg(skdata.rocket()))
    plan = plan_stream([path])
    assert len(plan) == 2 and plan.folders == []


def test_the_csv_has_one_row_per_file_and_matches_single_image_classify(predictor, labelled_zip, tmp_path):
    out = tmp_path / "rows.csv"
    result = classify_batch(predictor, labelled_zip, top_k=3, csv=out, chunk=4)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [e.name for e in plan_stream([labelled_zip]).entries]
    with zipfile.ZipFile(labelled_zip) as z:
        for row, batch_row in zip(rows, result.rows):
            if row["error"]:
                assert row["file"] == "set/coffee/1b-broken.jpg" and row["top-1"] == ""
                continue
            single = predictor.classify(predictor.decode(z.read(row["file"]), row["file"])[0], top_k=3)
            assert row["top-1"] == single.top1
            assert batch_row.confidence == pytest.approx(single.probabilities[0], abs=1e-5)
            assert [label for label, _ in batch_row.top_k] == single.labels


def test_interrupted_on_the_command_line_the_rows_so_far_are_in_the_csv(predictor, labelled_zip, tmp_path):
    out = tmp_path / "rows.csv"

    def interrupt(rows, done, total):
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        classify_batch(predictor, labelled_zip, csv=out, chunk=4, on_rows=interrupt)
    assert len(out.read_text().splitlines()) == 1 + 4


def test_not_sure_rows_are_those_below_the_threshold(predictor, labelled_zip):
    answered = [r for r in classify_batch(predictor, labelled_zip).rows if r.answered]
    threshold = float(np.median([r.confidence for r in answered]))
    rows = [r for r in classify_batch(predictor, labelled_zip, min_confidence=threshold).rows if r.answered]
    assert any(r.top1 == NOT_SURE for r in rows) and any(r.top1 != NOT_SURE for r in rows)
    for row in rows:
        assert (row.top1 == NOT_SURE) == (row.confidence < threshold)
        assert len(row.top_k) == 3  # the top guesses are kept


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5"])
def test_a_threshold_outside_0_to_1_is_refused(predictor, labelled_zip, bad):
    with pytest.raises(BatchError, match="from 0 to 1"):
        classify_batch(predictor, labelled_zip, min_confidence=bad)


def test_folders_are_matched_exactly_then_ignoring_case_and_separators():
    match = ClassMatch.of(["cat", "Golden_Retriever", "TABBY-CAT", "zebra"], ["cat", "golden retriever", "tabby cat"])
    assert match.matched == {"Golden_Retriever": "golden retriever", "TABBY-CAT": "tabby cat", "cat": "cat"}
    assert match.unmatched == ["zebra"]


def test_accuracy_and_per_class_figures_match_scikit_learn(predictor, labelled_zip):
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    result = evaluate(predictor, labelled_zip, chunk=4)
    truth = {"CAT": "cat", "coffee": "coffee", "rocket": "rocket"}
    scored = [r for r in result.rows if r.answered]
    y_true = [truth[r.folder] for r in scored]
    y_pred = [r.predicted for r in scored]
    assert result.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=CLASSES, zero_division=0)
    report = result.to_dict()
    for i, cls in enumerate(CLASSES):
        row = next(x for x in report["per_class"] if x["class"] == cls)
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (p[i], r[i], f[i], s[i]), abs=1e-4)
    assert report["confusion"]["matrix"] == confusion_matrix(y_true, y_pred, labels=CLASSES).tolist()
    assert report["matched"] == truth and report["unmatched"] == []
    assert len(result.rows) == 10 and sum(not r.answered for r in result.rows) == 1
    assert len(report["mistakes"]) == sum(t != p_ for t, p_ in zip(y_true, y_pred))


def test_evaluation_reports_the_calibration_error_of_its_answers(predictor, labelled_zip):
    result = evaluate(predictor, labelled_zip, chunk=4)
    truth = {"CAT": "cat", "coffee": "coffee", "rocket": "rocket"}
    scored = [r for r in result.rows if r.answered]
    confidence = np.array([r.confidence for r in scored])
    right = np.array([truth[r.folder] == r.predicted for r in scored], dtype=float)
    # 15 equal-width bins of the top confidence: the gap between accuracy and confidence, weighted by the bin's share
    bins = np.minimum((confidence * 15).astype(int), 14)
    expected = sum(abs(right[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
                   for b in np.unique(bins))
    assert result.calibration_error == pytest.approx(expected, abs=1e-4)
    assert result.to_dict()["calibration_error"] == result.calibration_error


def test_folders_naming_no_class_give_predictions_only_and_say_why(predictor, tmp_path):
    path = tmp_path / "holiday.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("beach/1.jpg", _jpeg(skdata.coffee()))
        z.writestr("mountains/1.jpg", _jpeg(skdata.rocket()))
    result = evaluate(predictor, path)
    assert result.accuracy is None and result.results is None
    assert "no folder of holiday.zip names a class" in result.no_accuracy
    assert result.match.unmatched == ["beach", "mountains"]
    assert all(r.answered and r.top1 in CLASSES for r in result.rows)


def test_tta_reports_accuracy_and_time_with_and_without_the_flip_for_photo_models(predictor, labelled_zip):
    result = evaluate(predictor, labelled_zip, tta=True)
    assert set(result.tta) >= {"accuracy", "accuracy_without", "ms_per_image", "ms_per_image_without"}
    assert result.tta["ms_per_image"] > result.tta["ms_per_image_without"]


def test_tta_is_never_applied_to_a_digit_model(tmp_path, labelled_zip):
    model = resnet_hub.create("resnet18", num_classes=3, labels=CLASSES, preprocessing=Preprocessing(input_size=32))
    model.info.training = {"kind": "digits"}
    predictor = Predictor(model, "cpu", "fp32", cache_dir=None)
    result = evaluate(predictor, labelled_zip, tta=True)
    assert result.tta is None and any("flipped digit is another shape" in n for n in result.notes)


def test_evaluation_counts_the_images_the_model_trained_on(tmp_path):
    from resnet_hub.data import read_zip
    from resnet_hub.finetune import FinetuneConfig, finetune
    from resnet_hub.trained_on import write_record

    train_zip = tmp_path / "train.zip"
    with zipfile.ZipFile(train_zip, "w") as z:
        for cls, photo in PHOTOS.items():
            for i in range(4):
                z.writestr(f"{cls}/{i}.jpg", _jpeg(photo(), 10 * i))
    dataset = read_zip(train_zip)
    config = FinetuneConfig(base="scratch:resnet18", epochs=1, image_size=32, batch_size=4, val_fraction=0.25)
    folder = finetune(dataset, config).save(tmp_path / "tuned")
    write_record(folder, dataset, train_zip, config.val_fraction, config.seed)
    test_zip = tmp_path / "test.zip"
    with zipfile.ZipFile(test_zip, "w") as z:
        z.writestr("cat/same-file-new-name.jpg", _jpeg(skdata.chelsea(), 0))  # cat/0.jpg's bytes
        z.writestr("cat/new.jpg", _jpeg(skdata.chelsea(), 45))
    seen = evaluate(Predictor(folder, "cpu", "fp32", cache_dir=None), test_zip).seen_in_training
    assert seen["train"] + seen["validation"] == 1 and seen["images"] == 2


def test_compare_on_a_set_reports_accuracy_agreement_and_speed(predictor, model_folder, labelled_zip, tmp_path):
    other = resnet_hub.create("resnet18", num_classes=2, labels=["rocket", "cat"],
                              preprocessing=Preprocessing(input_size=64))
    result = compare_on_data([predictor, Predictor(other, "cpu", "fp32", cache_dir=None)], labelled_zip)
    assert result.shared_classes == ["cat", "rocket"]
    assert "compared on the 2 they share" in result.summary()
    table = result.table()
    assert len(table) == 2 and all(r["images/s"] > 0 for r in table)
    assert 0 <= result.agreement <= 1
    for e in result.evaluations.values():
        assert all(r.predicted in ("cat", "rocket") for r in e.rows if r.answered)


# --- the command line ------------------------------------------------------------------------------


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_classify_a_zip_prints_json_rows_and_writes_the_csv(model_folder, labelled_zip, tmp_path, capsys):
    out = tmp_path / "out.csv"
    code, stdout, _ = run(capsys, "classify", labelled_zip, "--model", model_folder, "--device", "cpu",
                          "--csv", out, "--json")
    assert code == 0
    report = json.loads(stdout)
    assert report["images"] == 10 and report["errors"] == 1 and len(report["rows"]) == 10
    assert list(report["failed"]) == ["set/coffee/1b-broken.jpg"] and len(report["results"]) == 9
    assert len(out.read_text().splitlines()) == 11


def test_classify_data_and_a_positional_input_are_exclusive(model_folder, labelled_zip, capsys):
    code, _, err = run(capsys, "classify", labelled_zip, "--data", labelled_zip, "--model", model_folder)
    assert code == 2 and "either as arguments or with --data, not both" in err


def test_min_confidence_outside_0_to_1_is_one_error_line(model_folder, labelled_zip, capsys):
    code, out, err = run(capsys, "classify", labelled_zip, "--model", model_folder, "--min-confidence", "1.5")
    assert code == 2 and out == "" and err.startswith("error: ") and "from 0 to 1" in err


def test_evaluate_json_carries_accuracy_per_class_and_confusion(model_folder, labelled_zip, capsys):
    code, stdout, _ = run(capsys, "evaluate", model_folder, labelled_zip, "--device", "cpu", "--json")
    report = json.loads(stdout)
    assert code == 0 and {"accuracy", "per_class", "confusion"} <= set(report)
    assert [r["class"] for r in report["per_class"]][:3] == CLASSES


def test_compare_data_json_reports_each_model_and_their_agreement(model_folder, labelled_zip, capsys):
    code, stdout, _ = run(capsys, "compare", "--data", labelled_zip, "--models", model_folder, model_folder,
                          "--device", "cpu", "--precision", "fp32", "--json")
    report = json.loads(stdout)
    assert code == 0 and report["agreement"] == 1.0 and len(report["models"]) == 2


# --- the app's batch jobs --------------------------------------------------------------------------


@pytest.fixture
def big_zip(tmp_path) -> Path:
    path = tmp_path / "many.zip"
    photo = _jpeg(skdata.coffee())
    with zipfile.ZipFile(path, "w") as z:
        for i in range(MANY):
            z.writestr(f"photos/{i:03d}.jpg", photo)
    return path


MANY = 240


def _registry():
    from resnet_hub.services.registry import ModelRegistry

    return ModelRegistry("cpu", "fp32", check_hub=False, allow_paths=True)


def test_stop_keeps_the_rows_so_far_and_their_csv(model_folder, big_zip):
    from resnet_hub.services.batches import BatchJobs
    from resnet_hub.training_slot import TrainingSlot

    jobs = BatchJobs(_registry(), TrainingSlot(), chunk=2)
    job = jobs.start_classify([big_zip], str(model_folder), top_k=3)
    job.events.get(timeout=120)  # the first chunk's rows
    assert jobs.stop(job.id)
    assert job.done.wait(120) and job.error is None
    assert 0 < len(job.rows) < MANY  # stopped after the chunk under way
    with open(job.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [r.file for r in job.rows]


def test_only_the_visitor_who_started_a_batch_may_stop_it(model_folder, big_zip):
    from resnet_hub.owners import Visitor
    from resnet_hub.services.batches import BatchJobs
    from resnet_hub.training_slot import TrainingSlot

    jobs = BatchJobs(_registry(), TrainingSlot(), chunk=4)
    owner, other = Visitor.on_space(browser_id="a" * 32), Visitor.on_space(browser_id="b" * 32)
    job = jobs.start_classify([big_zip], str(model_folder), visitor=owner)
    assert not jobs.stop(job.id, other)
    assert jobs.stop(job.id, owner)
    job.done.wait(120)


def test_a_single_image_is_answered_while_a_batch_runs_on_the_same_model(model_folder, big_zip):
    from resnet_hub.services.batches import BatchJobs
    from resnet_hub.training_slot import TrainingSlot

    registry = _registry()
    jobs = BatchJobs(registry, TrainingSlot(), chunk=2)
    job = jobs.start_classify([big_zip], str(model_folder))
    job.events.get(timeout=120)  # the batch is under way
    answer = registry.classify(skdata.chelsea(), str(model_folder), 3, heatmap=False)
    assert not job.done.is_set()  # answered between the batch's passes, not after it
    assert answer.prediction.top1 in CLASSES
    jobs.stop(job.id)
    job.done.wait(120)


def test_the_finetune_command_records_the_images_it_trained_on(tmp_path, capsys):
    train_zip = tmp_path / "train.zip"
    with zipfile.ZipFile(train_zip, "w") as z:
        for cls, photo in PHOTOS.items():
            for i in range(4):
                z.writestr(f"{cls}/{i}.jpg", _jpeg(photo(), 10 * i))
    out = tmp_path / "tuned"
    code, _, err = run(capsys, "finetune", "--data", train_zip, "--base", "scratch:resnet18", "--epochs", "1",
                       "--image-size", "32", "--batch-size", "4", "--out", out, "--json")
    assert code == 0, err
    record = json.loads((out / "trained_on.json").read_text())
    assert len(record["train"]) + len(record["validation"]) == 12 and record["validation"]
    assert not set(record["train"]) & set(record["validation"])
