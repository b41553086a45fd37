"""The command line: help for every command, classify and compare output, and bad input as one
`error:` line on stderr with exit code 2. Models are small folders saved here; the Hub is never asked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data

import resnet_hub
from resnet_hub import Preprocessing
from resnet_hub.__main__ import main
from resnet_hub.predict import Predictor

from .conftest import ARCHS, randomize_batchnorm

ROOT = Path(__file__).resolve().parents[1]
LABELS = [f"class {i}" for i in range(10)]
COMMANDS = ["classify", "compare", "bench", "finetune", "starter", "why-residual", "evaluate", "bench-batch"]


def run_in_process(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_subprocess(*argv: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "resnet_hub", *map(str, argv)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A small (64 px, 10 classes) saved model per architecture."""
    out = {}
    for arch in ARCHS:
        torch.manual_seed(0)
        model = resnet_hub.create(
            arch, num_classes=10, labels=LABELS, preprocessing=Preprocessing(input_size=64, crop_pct=0.875)
        )
        out[arch] = randomize_batchnorm(model).save_pretrained(tmp_path_factory.mktemp(f"cli-{arch}") / arch)
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(data.chelsea()).save(folder / "chelsea.png")
    Image.fromarray(data.coffee()).save(folder / "coffee.jpg", quality=90)
    (folder / "page.jpg").write_text("<!DOCTYPE html><html><body>Not found</body></html>")
    return {p.name: p for p in folder.iterdir()}


# --- help ---------------------------------------------------------------------------------


def test_python_m_resnet_hub_help_lists_every_command():
    result = run_subprocess("--help")
    assert result.returncode == 0, result.stderr
    assert all(command in result.stdout for command in COMMANDS)


@pytest.mark.parametrize(
    "command, flags",
    [
        ("classify", ["IMAGE", "--model", "--top-k", "--device", "--precision", "--engine", "--compile", "--json",
                      "--data", "--csv", "--min-confidence", "--tta"]),
        ("compare", ["IMAGE", "--models", "--top-k", "--runs", "--device", "--precision", "--engine", "--json",
                     "--data", "--tta"]),
        ("evaluate", ["MODEL", "DATA", "--top-k", "--tta", "--csv", "--device", "--json"]),
        ("bench-batch", ["--models", "--images", "--batch-size", "--runs", "--device", "--json"]),
        ("bench", ["--models", "--batch-size", "--runs", "--variants", "--device", "--engine", "--json"]),
        ("finetune", ["--data", "--base", "--out", "--overwrite", "--epochs", "--lr", "--batch-size", "--freeze",
                      "--image-size", "--push-to", "--device", "--precision", "--json"]),
        ("starter", ["--archs", "--force", "--json"]),
        ("why-residual", ["degradation", "gradients", "plain-vs-resnet", "--depths", "--epochs", "--seeds", "--live",
                          "--cached", "--no-cache", "--json"]),
    ],
)
def test_each_command_help_exits_0_and_documents_its_flags(command, flags, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert all(flag in out for flag in flags), [f for f in flags if f not in out]


# --- classify and compare -----------------------------------------------------------------


def test_classify_json_prints_the_top_k_of_each_image(folders, images, capsys):
    paths = [images["chelsea.png"], images["coffee.jpg"]]
    code, out, _ = run_in_process(capsys, "classify", *paths, "--model", folders["resnet18"], "--top-k", "3",
                                  "--device", "cpu", "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["model"], report["device"]) == (str(folders["resnet18"]), "cpu")
    assert list(report["results"]) == [str(p) for p in paths]
    for top in report["results"].values():
        assert len(top) == 3 and set(top) <= set(LABELS)
        assert list(top.values()) == sorted(top.values(), reverse=True)


def test_classify_json_matches_what_the_library_predicts(folders, images, capsys):
    path = images["chelsea.png"]
    code, out, _ = run_in_process(capsys, "classify", path, "--model", folders["resnet18"], "--top-k", "4",
                                  "--device", "cpu", "--precision", "fp32", "--json")
    expected = Predictor(folders["resnet18"], "cpu", "fp32").classify(path, top_k=4).as_dict()
    assert code == 0
    result = json.loads(out)["results"][str(path)]
    assert list(result) == list(expected)
    assert list(result.values()) == pytest.approx(list(expected.values()), abs=1e-6)


def test_classify_prints_each_image_then_its_labels_with_percentages(folders, images, capsys):
    path = images["coffee.jpg"]
    code, out, _ = run_in_process(capsys, "classify", path, "--model", folders["resnet18"], "--top-k", "2",
                                  "--device", "cpu")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{path}:"
    assert len(lines) == 3
    assert all(re.fullmatch(r"\s+\d{1,3}\.\d\d%\s+class \d", line) for line in lines[1:]), lines


def test_classify_shows_5_labels_or_every_class_when_the_model_has_fewer(folders, images, tmp_path, capsys):
    three_classes = resnet_hub.create("resnet18", num_classes=3, preprocessing=Preprocessing(input_size=32))
    for folder, shown in [(three_classes.save_pretrained(tmp_path / "three"), 3), (folders["resnet18"], 5)]:
        code, out, _ = run_in_process(capsys, "classify", images["chelsea.png"], "--model", folder, "--json")
        assert code == 0
        assert len(json.loads(out)["results"][str(images["chelsea.png"])]) == shown


def test_compare_json_reports_agreement_predictions_and_timings(folders, images, capsys):
    names = [str(folders["resnet18"]), str(folders["resnet50"])]
    code, out, _ = run_in_process(capsys, "compare", images["chelsea.png"], "--models", *names, "--top-k", "3",
                                  "--runs", "2", "--device", "cpu", "--json")
    assert code == 0
    report = json.loads(out)
    assert list(report["predictions"]) == list(report["timings"]) == names
    assert all(len(top) == 3 for top in report["predictions"].values())
    top1 = {max(top, key=top.get) for top in report["predictions"].values()}
    assert report["agree"] is (len(top1) == 1)
    for timing in report["timings"].values():
        assert timing["p90_ms"] >= timing["median_ms"] > 0
        assert (timing["batch_size"], timing["runs"]) == (1, 2)
    assert report["parameters"][names[0]] < report["parameters"][names[1]]
    assert 0 < report["gmacs"][names[0]] < report["gmacs"][names[1]]


def test_compare_prints_each_models_top_k_the_agreement_and_a_table(folders, images, capsys, copy_of):
    names = [str(folders["resnet18"]), str(copy_of(folders["resnet18"]))]
    code, out, _ = run_in_process(capsys, "compare", images["coffee.jpg"], "--models", *names, "--top-k", "2",
                                  "--runs", "1", "--device", "cpu")
    assert code == 0
    assert f"{names[0]}:" in out.splitlines() and f"{names[1]}:" in out.splitlines()
    assert re.search(r"^top-1 agrees: (yes|no)$", out, re.MULTILINE)
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(names)  # header, rule, one row per model
    assert "| model" in table[0] and "median (ms)" in table[0]


# --- bad input: one line on stderr, exit code 2 --------------------------------------------


# Each case: (argv from the model folders f, the images i and an empty tmp folder t; what the error says).
BAD_INPUT = {
    "missing-image": (lambda f, i, t: ["classify", t / "missing.jpg", "--model", f["resnet18"]],
                      "image 1 of 1 (missing.jpg): no such file"),
    "not-an-image": (lambda f, i, t: ["classify", i["page.jpg"], "--model", f["resnet18"]],
                     "(page.jpg) (text: HTML, XML or SVG) is not an image"),
    "unknown-model": (lambda f, i, t: ["classify", i["chelsea.png"], "--model", "no-such-model"],
                      "'no-such-model' is not a model: give a short name"),
    "missing-model-folder": (lambda f, i, t: ["classify", i["chelsea.png"], "--model", t / "no-model"],
                             "does not exist"),
    "top-k-0": (lambda f, i, t: ["classify", i["chelsea.png"], "--model", f["resnet18"], "--top-k", "0"],
                "top_k must be a whole number from 1 to 10"),
    "top-k-above-classes": (lambda f, i, t: ["classify", i["chelsea.png"], "--model", f["resnet18"], "--top-k", "11"],
                            "top_k must be a whole number from 1 to 10"),
    "bad-device": (lambda f, i, t: ["classify", i["chelsea.png"], "--model", f["resnet18"], "--device", "tpu"],
                   "unknown device 'tpu'"),
    "compare-missing-image": (lambda f, i, t: ["compare", t / "missing.jpg", "--models", f["resnet18"]],
                              "image 1 of 1 (missing.jpg): no such file"),
    "compare-runs-0": (lambda f, i, t: ["compare", i["chelsea.png"], "--models", f["resnet18"], "--runs", "0"],
                       "runs must be a whole number of at least 1"),
    "finetune-out-exists": (lambda f, i, t: ["finetune", "--data", "mnist-sample", "--out", t],
                            "already exists: choose another folder or add --overwrite"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_error_line_on_stderr_and_exit_code_2(case, folders, images, tmp_path, capsys):
    argv, expected = BAD_INPUT[case]
    code, out, err = run_in_process(capsys, *argv(folders, images, tmp_path))
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert expected in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_one_error_line_and_exit_code_2(folders, images, capsys):
    code, _, err = run_in_process(capsys, "classify", images["chelsea.png"], "--model", folders["resnet18"],
                                  "--device", "cuda")
    assert code == 2
    assert err.startswith("error: ") and "no CUDA GPU is available" in err and len(err.splitlines()) == 1


def test_a_hub_id_missing_offline_is_one_error_line_saying_how_to_fetch_it(hub_cache, images, capsys):
    code, _, err = run_in_process(capsys, "classify", images["chelsea.png"], "--model", "nobody/no-such-resnet")
    assert code == 2
    assert err.startswith("error: nobody/no-such-resnet is not in the local Hugging Face cache")
    assert "hf download nobody/no-such-resnet" in err and len(err.splitlines()) == 1


def test_an_error_in_a_real_process_is_one_stderr_line_and_exit_code_2(folders, tmp_path):
    result = run_subprocess("classify", tmp_path / "missing.jpg", "--model", folders["resnet18"], "--device", "cpu")
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: image 1 of 1 (missing.jpg): no such file")


@pytest.mark.parametrize(
    "argv",
    [
        ["classify", "x.png", "--no-such-flag"],
        ["classify", "x.png", "--precision", "fp8"],
        ["classify", "x.png", "--top-k", "three"],
        ["classify"],
        ["no-such-command"],
        [],
    ],
    ids=["unknown-flag", "bad-precision", "non-integer-top-k", "no-image", "unknown-command", "no-command"],
)
def test_argparse_errors_exit_2_with_usage_on_stderr(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("usage: python -m resnet_hub") and "error:" in err


# --- the same names as the app's choosers ---------------------------------------------------------


@pytest.fixture
def store_home(tmp_path, monkeypatch, folders) -> Path:
    """A model store holding 'run-one' (a model fine-tuned in the app) and both starters (tiny)."""
    import shutil

    from resnet_hub import store

    monkeypatch.setenv("RESNET_HUB_HOME", str(tmp_path / "home"))
    for name, arch in (("run-one", "resnet18"), ("starter-resnet18-mnist", "resnet18"),
                       ("starter-resnet50-mnist", "resnet50")):
        shutil.copytree(folders[arch], store.model_folder(name))
    return tmp_path / "home"


@pytest.mark.parametrize("name", ["run-one", "local:run-one", "starter-resnet50-mnist"])
def test_classify_accepts_a_store_name_as_the_app_does(store_home, images, capsys, name):
    code, out, err = run_in_process(capsys, "classify", images["chelsea.png"], "--model", name, "--json")
    assert code == 0, err
    assert list(json.loads(out)["results"]) == [str(images["chelsea.png"])]


def test_offline_a_short_name_serves_the_starter_and_says_so(store_home, hub_cache, images, capsys):
    code, out, err = run_in_process(capsys, "classify", images["chelsea.png"], "--model", "resnet50", "--json")
    assert code == 0, err
    assert "note: offline: timm/resnet50.a1_in1k is neither on the Hub nor in the local cache" in err
    assert "starter-resnet50-mnist" in err
    assert json.loads(out)["model"] == "ResNet-50 (starter digits)"


def test_compare_accepts_store_names(store_home, images, capsys):
    code, out, err = run_in_process(capsys, "compare", images["chelsea.png"], "--models", "run-one",
                                    "starter-resnet50-mnist", "--runs", "2", "--json")
    assert code == 0, err
    assert set(json.loads(out)["predictions"]) == {"run-one", "starter-resnet50-mnist"}


def test_a_missing_image_is_named_before_the_default_model_is_looked_for(hub_cache, tmp_path, capsys):
    code, _, err = run_in_process(capsys, "classify", tmp_path / "missing.jpg")  # default --model resnet50, offline
    assert code == 2
    assert err.startswith("error: image 1 of 1 (missing.jpg): no such file") and len(err.splitlines()) == 1


def test_help_does_not_import_torch():
    """`--help` starts in well under a second because the heavy libraries load only when a command runs."""
    probe = ("import runpy, sys\n"
             "sys.argv = ['resnet_hub', '--help']\n"
             "try:\n    runpy.run_module('resnet_hub', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "heavy = sorted(m for m in ('torch', 'torchvision', 'gradio', 'huggingface_hub', 'numpy') if m in sys.modules)\n"
             "print('heavy:', heavy)\n")
    for argv in ([], ["finetune"], ["classify"]):
        result = subprocess.run([sys.executable, "-c", probe.replace("'--help'", ", ".join(map(repr, argv + ["--help"])))],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith("heavy: []"), (argv, result.stdout[-300:])


def test_why_residual_runs_through_main_and_bad_depths_are_one_error_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RESNET_HUB_HOME", str(tmp_path))
    code, out, err = run_in_process(capsys, "why-residual", "gradients", "--depths", "8", "--width", "2",
                                    "--batch-size", "16", "--json")
    assert code == 0, err
    nets = json.loads(out)["gradients"]["nets"]
    assert {n["net"] for n in nets} == {"plain-8", "resnet-8"} and len(nets) == 8
    code, out, err = run_in_process(capsys, "why-residual", "degradation", "--depths", "20", "21")
    assert code == 2 and out == "" and err.startswith("error: ") and "6n+2" in err and len(err.splitlines()) == 1


FINETUNE_TINY = ["--data", "mnist-sample", "--limit-per-class", "4", "--image-size", "32", "--batch-size", "16",
                 "--epochs", "1", "--lr", "0.05", "--freeze", "3", "--device", "cpu", "--precision", "fp32"]


@pytest.mark.parametrize("name", ["run-one", "local:run-one", "starter-resnet18-mnist"])
def test_finetune_accepts_a_store_name_as_its_base_as_the_app_does(store_home, hub_cache, capsys, name):
    code, out, err = run_in_process(capsys, "finetune", *FINETUNE_TINY, "--base", name, "--out",
                                    f"from-{name.replace(':', '-')}", "--json")
    assert code == 0, err
    assert json.loads(out)["out"] == str(store_home / "models" / f"from-{name.replace(':', '-')}")


def test_finetune_out_as_a_plain_name_goes_into_the_store_the_app_lists(store_home, hub_cache, capsys, tmp_path,
                                                                        monkeypatch):
    from resnet_hub.services.registry import ModelRegistry

    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process(capsys, "finetune", *FINETUNE_TINY, "--base", "run-one", "--out", "my-digits")
    assert code == 0, err
    assert not (tmp_path / "my-digits").exists()
    assert ("my-digits (fine-tuned here)", "local:my-digits") in ModelRegistry(check_hub=False).choices()
    code, _, err = run_in_process(capsys, "finetune", *FINETUNE_TINY, "--base", "run-one", "--out", "./my-digits")
    assert code == 0, err
    assert (tmp_path / "my-digits" / "config.json").is_file()  # a path: where it says


@pytest.mark.parametrize("name", ["run-one", "local:run-one"])
def test_load_accepts_a_store_name_as_the_app_does(store_home, name):
    model = resnet_hub.load(name, device="cpu")
    assert model.config.architecture == "resnet18"
