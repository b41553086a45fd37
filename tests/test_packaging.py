"""The package installs on its own: `pip install .` is a working library, the extras add the rest, and
requirements.txt (what the Space installs) is exactly the package with every extra."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
from packaging.requirements import Requirement  # noqa: E402 - after the skip

ROOT = Path(__file__).resolve().parent.parent
# Imported by the app, the engines or the tests, never by the library's core paths.
NOT_CORE = {"gradio": "gradio", "pandas": "pandas", "matplotlib": "matplotlib", "skimage": "scikit-image",
            "openvino": "openvino", "nncf": "nncf", "onnx": "onnx", "onnxruntime": "onnxruntime", "timm": "timm",
            "transformers": "transformers"}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _extras() -> dict[str, list[Requirement]]:
    """Each extra's requirements, with `resnet-hub[a,b]` expanded to those extras' own."""
    raw = {name: [Requirement(r) for r in reqs] for name, reqs in _project()["optional-dependencies"].items()}

    def expand(reqs: list[Requirement]) -> list[Requirement]:
        out = []
        for r in reqs:
            out += expand([x for e in sorted(r.extras) for x in raw[e]]) if r.name == _project()["name"] else [r]
        return out

    return {name: expand(reqs) for name, reqs in raw.items()}


def _requirements_txt() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_requirements_txt_is_the_core_dependencies_and_every_extra():
    core = [Requirement(r) for r in _project()["dependencies"]]
    every = core + [r for reqs in _extras().values() for r in reqs]
    assert sorted(str(Requirement(line)) for line in _requirements_txt()) == sorted(set(map(str, every)))


def test_the_all_extra_is_every_other_extra():
    extras = _extras()
    others = {str(r) for name, reqs in extras.items() if name != "all" for r in reqs}
    assert {str(r) for r in extras["all"]} == others


def test_torch_and_torchvision_are_pinned_as_a_pair():
    pins = {r.name: r.specifier for r in map(Requirement, _project()["dependencies"])}
    assert [s.operator for s in pins["torch"]] == ["=="] and [s.operator for s in pins["torchvision"]] == ["=="]


@pytest.mark.parametrize("name, floor", [("onnx", "1.21"), ("pillow", "12.3")])
def test_a_dependency_with_a_known_vulnerability_below_its_floor_cannot_resolve_below_it(name, floor):
    from packaging.version import Version

    (req,) = [Requirement(r) for r in _requirements_txt() if Requirement(r).name.lower() == name]
    below = Version(floor).release[:-1] + (Version(floor).release[-1] - 1,)
    assert not req.specifier.contains(".".join(map(str, below)))
    assert req.specifier.contains(floor)


def test_the_core_dependencies_hold_none_of_the_packages_the_extras_add():
    core = {Requirement(r).name.lower() for r in _project()["dependencies"]}
    assert not core & set(NOT_CORE.values())


# ---------------------------------------------------------------------------
# The README's snippet, run where only the core dependencies can be imported

# Runs before the snippet: the packages outside the core dependencies cannot be imported, found or looked up, as in a
# fresh `pip install .`; the Hub's upload calls answer here (the machine is offline).
PRELUDE = textwrap.dedent('''
    import importlib.abc, importlib.metadata, importlib.util, os, runpy, sys

    MODULES = set(sys.argv[2].split(","))
    DISTRIBUTIONS = {d.lower().replace("_", "-") for d in sys.argv[3].split(",")}
    leaked = sorted(MODULES & {m.partition(".")[0] for m in sys.modules})
    if leaked:
        sys.exit(f"already imported at start-up: {leaked}")

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in MODULES:
                raise ModuleNotFoundError(f"No module named {name!r} (not a core dependency)", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    _find_spec, _distribution = importlib.util.find_spec, importlib.metadata.distribution
    importlib.util.find_spec = lambda name, package=None: (
        None if name.partition(".")[0] in MODULES else _find_spec(name, package))

    def distribution(name):
        if name.lower().replace("_", "-") in DISTRIBUTIONS:
            raise importlib.metadata.PackageNotFoundError(name)
        return _distribution(name)

    importlib.metadata.distribution = distribution

    import huggingface_hub

    class Commit:
        commit_url = "https://huggingface.co/offline/commit/0"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        print(f"upload to {repo_id}:", ", ".join(sorted(os.listdir(folder_path))))
        return Commit()

    huggingface_hub.HfApi.create_repo = lambda self, *args, **kwargs: None
    huggingface_hub.HfApi.upload_folder = upload_folder
    runpy.run_path(sys.argv[1], run_name="__main__")
''')


def package_snippet(readme: str) -> str:
    """The first ```python block after the heading "## The package"."""
    section = readme.split("\n## The package", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, 'README.md has no ```python block under "## The package"'
    return match.group(1)


def _lay_out_offline_inputs(snippet: str, folder: Path, hub_cache: Path) -> None:
    """Every Hub id the snippet loads, as a random model in an offline Hugging Face cache; every image file it
    names, as a real photo in its folder."""
    import resnet_hub
    from resnet_hub.examples import photo

    from .conftest import HubCache

    cache = HubCache(hub_cache)
    for repo_id in set(re.findall(r"""load\(\s*["']([\w.-]+/[\w.-]+)["']""", snippet)):
        arch = "resnet50" if "50" in repo_id else "resnet18"
        saved = resnet_hub.create(arch, num_classes=1000).save_pretrained(folder / ".models" / repo_id)
        cache.add_folder(repo_id, saved)
    for name in set(re.findall(r"""["']([\w.-]+\.(?:jpe?g|png))["']""", snippet)):
        photo("chelsea").save(folder / name)


def run_with_core_dependencies_only(script: Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRELUDE, str(script), ",".join(NOT_CORE), ",".join(NOT_CORE.values())],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    return {**env, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_CACHE": str(tmp_path / "hf-cache"), "RESNET_HUB_HOME": str(tmp_path / "home"),
            "RESNET_HUB_ENGINE_CACHE": str(tmp_path / "engine-cache")}


def test_the_prelude_makes_a_package_outside_the_core_unimportable(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text("try:\n    import skimage.data\nexcept ModuleNotFoundError as e:\n    print('absent:', e.name)\n"
                      "import importlib.util, importlib.metadata\nprint(importlib.util.find_spec('openvino'))\n"
                      "import resnet_hub.engines as e\nprint(e.openvino_version())\n")
    done = run_with_core_dependencies_only(script, tmp_path, _env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["absent: skimage", "None", "absent"]


@pytest.mark.slow
def test_the_readmes_package_snippet_runs_with_only_the_core_dependencies(tmp_path):
    snippet = package_snippet((ROOT / "README.md").read_text(encoding="utf-8"))
    _lay_out_offline_inputs(snippet, tmp_path, tmp_path / "hf-cache")
    script = tmp_path / "snippet.py"
    script.write_text(snippet)
    done = run_with_core_dependencies_only(script, tmp_path, _env(tmp_path))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"


# Every library path the issue names, on a small model: what the README's snippet may leave out.
LIBRARY_PATHS = textwrap.dedent('''
    import resnet_hub
    from resnet_hub.__main__ import main
    from resnet_hub.data import mnist_sample
    from resnet_hub.examples import photo
    from resnet_hub.finetune import FinetuneConfig, finetune
    from resnet_hub.metadata import Preprocessing
    from resnet_hub.predict import Predictor

    model = resnet_hub.create("resnet18", num_classes=3, labels=["cat", "dog", "cup"],
                              preprocessing=Preprocessing(input_size=64, crop_pct=0.875))
    model = resnet_hub.load(model.save_pretrained("my-model"))
    predictor = Predictor(model, "cpu")  # the engine choice: checked on the shipped photos
    print("choice:", predictor.engine_choice.summary())
    print("top-2:", predictor.classify(photo("chelsea"), top_k=2).as_dict())
    overlay, class_id = predictor.gradcam(photo("chelsea"))
    print("grad-CAM:", overlay.size, class_id)
    model.push_to_hub("me/my-model", token="hf_not_a_real_token")
    config = FinetuneConfig(base="scratch:resnet18", epochs=1, image_size=32, batch_size=32, seed=0)
    print("fine-tuned:", finetune(mnist_sample(limit_per_class=8), config).save("tuned").name)
    photo("chelsea").save("cat.png")
    main(["classify", "--model", "my-model", "--top-k", "2", "--device", "cpu", "cat.png"])
''')


@pytest.mark.slow
def test_create_load_save_push_predict_finetune_and_the_cli_run_with_only_the_core_dependencies(tmp_path):
    script = tmp_path / "library.py"
    script.write_text(LIBRARY_PATHS)
    done = run_with_core_dependencies_only(script, tmp_path, _env(tmp_path))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "pip install 'resnet-hub[openvino]'" in done.stdout  # the choice says what would add the faster engine
    assert "upload to me/my-model: README.md, config.json, model.safetensors" in done.stdout
