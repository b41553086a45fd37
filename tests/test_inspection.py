"""The data inspection (resnet_hub.inspection): planted wrong labels, copies and outliers are found, on real digits
and a real trained base; the fixes and the split keep what they promise."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from resnet_hub import copies
from resnet_hub.data import ImageDataset, read_zip, stratified_split
from resnet_hub.embeddings import CACHE, image_key
from resnet_hub.finetune import FinetuneConfig, finetune
from resnet_hub.inspection import InspectionError, drop_flagged, fixed, inspect, read_for_inspection, write_zip

from .planted import planted_digits

BASE_TRAINED_PER_CLASS = 200  # conftest's digit_base trains on the first 200 digits of each class


@pytest.fixture(scope="module")
def planted():
    """400 digits conftest's digit_base never saw, with planted errors."""
    return planted_digits(seed=7, n_outliers=3, skip_per_class=BASE_TRAINED_PER_CLASS)


@pytest.fixture(scope="module")
def starter_base(tmp_path_factory):
    """The digit starter, trained by its own recipe (about 80 s on 2 cores): the base the issue's figure names."""
    from resnet_hub.data import mnist_sample
    from resnet_hub.services.starters import STARTER_RECIPE

    result = finetune(mnist_sample(), STARTER_RECIPE["resnet18"])
    return result.save(tmp_path_factory.mktemp("inspection-base") / "starter-resnet18-mnist")


@pytest.fixture(scope="module")
def found(planted, digit_base):
    return inspect(planted.data, base=str(digit_base))


def label_check(found, planted) -> tuple[float, float]:
    """(recall of the moved labels, precision of the flags); noise belongs to no class, so flagging it is no mistake."""
    flagged = {issue.path for issue in found.label_issues} - planted.outliers
    moved = {name for name in planted.wrong_labels if "/img" in name}  # the 10% moved to another class
    return len(flagged & moved) / len(moved), len(flagged & planted.wrong_labels) / max(len(flagged), 1)


def test_most_wrong_labels_are_found_even_by_a_weak_base(found, planted):
    # conftest's digit_base (3 epochs on 2,000 digits) separates digits less well than the starter: measured 85-93%
    # recall at 72-80% precision (docs/benchmarks.md). The issue's figure, on the starter, is the test below.
    recall, precision = label_check(found, planted)
    assert recall >= 0.8 and precision >= 0.65, (recall, precision)


@pytest.mark.figures
def test_the_starter_finds_85_percent_of_wrong_labels_at_85_percent_precision_and_the_noise(starter_base):
    planted = planted_digits(seed=7, n_outliers=3)  # digits the starter's recipe held out
    found = inspect(planted.data, base=str(starter_base))
    recall, precision = label_check(found, planted)
    assert recall >= 0.85 and precision >= 0.85, (recall, precision)
    flagged = [o.path for o in found.outliers]
    assert planted.outliers <= set(flagged), flagged
    assert len(flagged) <= 0.08 * sum(found.classes.values()), flagged


def test_a_label_issue_names_the_given_and_the_suggested_class(found, planted):
    issue = found.label_issues[0]
    assert issue.given == issue.path.split("/")[1]
    assert issue.suggested != issue.given and issue.suggested in found.classes
    assert 0 < issue.confidence <= 1


def test_copies_are_grouped_with_their_original_and_ordinary_digits_are_not(found, planted):
    groups = [set(g.paths) for g in found.duplicates]
    grouped = [copy for copy, original in planted.copies.items() if any({copy, original} <= g for g in groups)]
    false_groups = [g for g in groups if not any(c in g for c in planted.copies)]
    assert len(grouped) >= 18, sorted(set(planted.copies) - set(grouped))
    assert len(false_groups) <= 3, false_groups


def test_a_group_across_class_folders_is_marked(found, planted):
    across = [g for g in found.duplicates if g.across_classes]
    assert across
    for group in across:
        assert len({p.split("/")[1] for p in group.paths}) > 1


def test_the_json_has_the_documented_fields(found):
    d = found.to_dict()
    assert sum(d["classes"].values()) == 423
    assert set(d["label_issues"][0]) >= {"path", "given", "suggested", "confidence"}
    assert set(d["duplicates"][0]) >= {"paths", "across_classes", "across_split"}
    assert set(d["outliers"][0]) >= {"path", "score"}


def test_the_fine_tune_after_an_inspection_reads_its_embeddings(found, digit_base):
    CACHE.clear()
    again = inspect(found.dataset, base=str(digit_base))
    assert again.reused == 0
    config = FinetuneConfig(base=str(digit_base), freeze=4, epochs=1, augment="none", image_size=32)
    result = finetune(found.dataset, config)
    assert any("read from the inspection's cache" in note for note in result.model.info.notes)
    assert inspect(found.dataset, base=str(digit_base)).reused == len(found.dataset)


def test_a_fine_tune_that_trains_the_trunk_reads_nothing(found, digit_base):
    result = finetune(found.dataset, FinetuneConfig(base=str(digit_base), freeze=2, epochs=1, image_size=32))
    assert not any("inspection's cache" in note for note in result.model.info.notes)


def test_drop_flagged_drops_every_flagged_image_and_counts_each_kind(found):
    cleaned, counts = drop_flagged(found)
    assert counts["label issues dropped"] == len(found.label_issues)
    assert sum(counts.values()) == len(found.dataset) - len(cleaned)
    assert cleaned.fixes == {k: v for k, v in counts.items() if v}


def test_the_card_records_the_fixes_as_counts(found, digit_base, tmp_path):
    moved = {found.label_issues[0].index: found.label_issues[0].suggested}
    data = fixed(found.dataset, drop={found.label_issues[1].index}, move=moved)
    result = finetune(data, FinetuneConfig(base=str(digit_base), freeze=4, epochs=1, image_size=32))
    card = (result.save(tmp_path / "fixed") / "README.md").read_text()
    assert "**Fixed before training**" in card and "1 images dropped, 1 labels moved" in card
    assert found.label_issues[0].path.rsplit("/", 1)[-1] not in card


def test_a_moved_image_trains_under_its_new_class(found):
    issue = found.label_issues[0]
    data = fixed(found.dataset, move={issue.index: issue.suggested})
    position = data.names.index(issue.path)
    assert data.classes[data.targets[position]] == issue.suggested


def test_moving_to_a_class_that_is_not_there_is_refused(found):
    with pytest.raises(InspectionError, match="not a class"):
        fixed(found.dataset, move={0: "cats"})


def test_the_fixed_zip_reads_back_with_the_fixes(found, tmp_path):
    issue = found.label_issues[0]
    data = fixed(found.dataset, drop={1, 2}, move={issue.index: issue.suggested})
    write_zip(data, tmp_path / "fixed.zip")
    again = read_zip(tmp_path / "fixed.zip")
    assert len(again) == len(data) and again.counts() == data.counts()


def _zip(members: dict[str, Image.Image]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, image in members.items():
            png = io.BytesIO()
            image.save(png, format="PNG")
            archive.writestr(name, png.getvalue())
    return out.getvalue()


def _digits(n: int, seed: int = 0) -> list[Image.Image]:
    from .planted import held_out_digits

    images, _ = held_out_digits(BASE_TRAINED_PER_CLASS)
    rng = np.random.default_rng(seed)
    return [images[i] for i in rng.choice(len(images), n, replace=False)]


def test_a_zip_with_one_class_is_inspected_and_says_why_labels_are_not(digit_base):
    images = _digits(12)
    members = {f"only/{i}.png": im for i, im in enumerate(images)} | {"only/copy.png": images[0]}
    found = inspect(_zip(members), base=str(digit_base))
    assert found.classes == {"only": 13}
    assert found.label_issues == [] and any("at least two classes" in n for n in found.notes)
    assert [sorted(g.paths) for g in found.duplicates] == [["only/0.png", "only/copy.png"]]


def test_a_class_of_one_image_is_left_out_of_the_label_check_and_said(digit_base):
    images = _digits(21, seed=1)
    members = {f"a/{i}.png": im for i, im in enumerate(images[:10])} | {f"b/{i}.png": im for i, im in
                                                                        enumerate(images[10:20])}
    members["c/0.png"] = images[20]
    found = inspect(_zip(members), base=str(digit_base))
    assert any("'c'" in n and "at least 2 images" in n for n in found.notes)


def test_a_scratch_base_gets_a_warning(planted):
    found = inspect(read_for_inspection(planted.data), base="scratch:resnet18", image_size=32)
    assert "random weights" in found.warning


def test_refused_files_are_listed_by_name(digit_base):
    members = {f"a/{i}.png": im for i, im in enumerate(_digits(4, seed=2))}
    data = _zip(members)
    out = io.BytesIO(data)
    with zipfile.ZipFile(out, "a") as archive:
        archive.writestr("a/notes.txt", b"not an image")
        archive.writestr("a/broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    found = inspect(out.getvalue(), base=str(digit_base))
    skipped = {name.partition(":")[0] for names in found.skipped.values() for name in names}
    assert {"a/notes.txt", "a/broken.png"} <= skipped


def test_a_stop_ends_the_inspection():
    from resnet_hub.inspection import InspectionStopped

    CACHE.clear()
    with pytest.raises(InspectionStopped):
        inspect("mnist-sample", base="scratch:resnet18", should_stop=lambda: "stopped")


def test_the_split_keeps_each_copy_group_on_one_side():
    images = _digits(40, seed=3)
    data = ImageDataset(images + images[:6], [i % 2 for i in range(40)] + [i % 2 for i in range(6)], ["a", "b"], "t")
    keys = [image_key(im) for im in data.images]
    groups = copies.copy_groups(data.images, keys)
    assert len(groups) == 6
    train, val = stratified_split(data, 0.5, seed=0)
    train, val, moved = copies.keep_together(train, val, groups)
    assert moved > 0
    for group in groups:
        assert set(group) <= set(train) or set(group) <= set(val)


def test_a_fine_tune_says_it_kept_copies_together(digit_base):
    images = _digits(30, seed=4)
    data = ImageDataset(images + images[:8], [i % 3 for i in range(30)] + [i % 3 for i in range(8)], ["a", "b", "c"],
                        "t", kind="digits")
    result = finetune(data, FinetuneConfig(base=str(digit_base), freeze=4, epochs=1, image_size=32,
                                           val_fraction=0.5))
    assert any("of copies kept on the training side" in n for n in result.model.info.notes)


def test_the_command_line_prints_the_documented_json(planted, digit_base, tmp_path, capsys):
    import json

    from resnet_hub.__main__ import main

    data = tmp_path / "digits.zip"
    data.write_bytes(planted.data)
    assert main(["inspect", "--data", str(data), "--base", str(digit_base), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sum(out["classes"].values()) == 423
    issue = out["label_issues"][0]
    assert issue["path"].startswith("digits/") and issue["given"] != issue["suggested"]
    assert any(set(g["paths"]) >= {c, planted.copies[c]} for g in out["duplicates"] for c in planted.copies)
    assert all(set(o) == {"path", "score"} for o in out["outliers"])


def test_finetune_drop_flagged_says_how_many_of_each_it_dropped(planted, digit_base, tmp_path, capsys):
    import json

    from resnet_hub.__main__ import main

    data = tmp_path / "digits.zip"
    data.write_bytes(planted.data)
    code = main(["finetune", "--data", str(data), "--base", str(digit_base), "--epochs", "1", "--freeze", "4",
                 "--out", str(tmp_path / "out"), "--drop-flagged", "--json"])
    captured = capsys.readouterr()
    assert code == 0
    dropped = json.loads(captured.out)["dropped"]
    assert dropped["label issues dropped"] >= 30 and dropped["copies dropped"] >= 10
    assert "--drop-flagged:" not in captured.err  # --json: the counts are in the JSON


def test_inspect_on_a_missing_zip_is_one_clear_line(tmp_path, capsys):
    from resnet_hub.__main__ import main

    assert main(["inspect", "--data", str(tmp_path / "nope.zip")]) == 2
    assert "does not exist" in capsys.readouterr().err
