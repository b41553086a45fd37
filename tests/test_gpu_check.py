"""The prepared GPU check (scripts/gpu_check.py), run on the CPU at tiny sizes: every step writes a well-formed table,
a step past its cap is cut and the next one runs, and --steps reruns only some."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.py"
NAMES = {0: "smoke", 1: "tests", 2: "model-only", 3: "end-to-end", 4: "load", 5: "bench-finetune", 6: "service"}


def gpu_check(out: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(out), "--device", "cpu", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def step_file(out: Path, step: int) -> dict:
    return json.loads((out / f"step{step}-{NAMES[step]}.json").read_text())


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("gpu-check") / "out"
    return out, gpu_check(out)


@pytest.mark.slow
def test_every_step_runs_on_the_cpu_and_writes_its_table(full_run):
    out, done = full_run
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["summary.md"] + [f"step{s}-{n}.json" for s, n in NAMES.items()])  # 8 files: what a device run brings back
    for step in NAMES:
        data = step_file(out, step)
        assert data["status"] == "ok" and data["rows"], (step, data.get("log_tail"))
        assert 0 < data["seconds"] <= data["cap_s"]


@pytest.mark.slow
def test_the_tables_hold_what_the_issue_asks_for(full_run):
    out, _ = full_run
    model_only = step_file(out, 2)["rows"]
    paths = [r["path"] for r in model_only]
    assert paths[:2] == ["torchvision eager fp32", "torchvision eager AMP (bf16 autocast)"]
    assert any(p.startswith("Predictor, as served: ") for p in paths)
    assert all(r["images/s"] > 0 and r["x eager fp32"] > 0 for r in model_only if "images/s" in r)
    end_to_end = step_file(out, 3)["rows"]
    assert {r["photos"] for r in end_to_end} == {"ImageNet-sized, 500x375", "2,000 px photos, 2000x1500"}
    assert all({"read ms", "decode ms", "resize ms", "network ms"} <= set(r) for r in end_to_end)
    load = step_file(out, 4)["rows"]
    assert [r["source"] for r in load] == ["Hub-layout folder", "Hugging Face cache, offline (repo id)"]
    assert all(r["outcome"] == "loaded" and r["RssAnon growth MB"] > 0 for r in load)  # on a CPU the weights are the copy
    assert any("tutorial" in r["loop"] for r in step_file(out, 5)["rows"])
    service = step_file(out, 6)
    assert [r["button"] for r in service["rows"]] == ["Classify (with its heatmap)"] * 2 + ["Compare"]
    assert len(service["tables"]["compare"]) == 2
    tests = step_file(out, 1)["rows"]
    assert any(r["what"].startswith("torchrun") and r["outcome"] == "PASSED" and '"backend": "gloo"' in r["detail"]
               for r in tests)


@pytest.mark.slow
def test_the_summary_renders_every_steps_table_in_markdown(full_run):
    out, _ = full_run
    summary = (out / "summary.md").read_text()
    for step in NAMES:
        assert f"## Step {step}: " in summary
    table_lines = [line for line in summary.splitlines() if line.startswith("|")]
    assert table_lines and all(line.endswith("|") for line in table_lines)


def test_a_step_past_its_cap_is_cut_and_reported_and_the_next_step_runs(tmp_path):
    done = gpu_check(tmp_path, "--steps", "0,0", "--cap", "0=0.5", timeout=120)
    assert done.returncode == 1  # a step that did not finish fails the run
    data = step_file(tmp_path, 0)
    assert data["status"] == "cut at its cap of 0 s" and data["seconds"] < 30
    assert done.stdout.count("step 0 (smoke): cut") == 2  # cut, and the step after it ran (and was cut) too
    assert "cut at its cap" in (tmp_path / "summary.md").read_text()


def test_rerunning_some_steps_keeps_the_others_tables(tmp_path):
    (tmp_path / "step4-load.json").write_text(json.dumps({"step": 4, "name": "load", "title": "kept", "status": "ok",
                                                          "seconds": 1.0, "cap_s": 30, "rows": [{"a": 1}], "notes": []}))
    assert gpu_check(tmp_path, "--steps", "0", timeout=300).returncode == 0
    assert step_file(tmp_path, 0)["status"] == "ok" and step_file(tmp_path, 4)["title"] == "kept"
    summary = (tmp_path / "summary.md").read_text()
    assert "## Step 0: " in summary and "## Step 4: kept" in summary


def test_unknown_steps_and_caps_are_refused_with_the_choices(tmp_path):
    done = gpu_check(tmp_path, "--steps", "9", timeout=120)
    assert done.returncode == 2 and "no step 9: the steps are [0, 1, 2, 3, 4, 5, 6]" in done.stderr
    done = gpu_check(tmp_path, "--cap", "x", timeout=120)
    assert done.returncode != 0 and "--cap takes STEP=SECONDS" in done.stderr
