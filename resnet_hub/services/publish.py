"""A model of the store leaves the app: pushed to the Hub (its card naming no upload unless asked), or downloaded."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from pathlib import Path

from ..data import MNIST_SAMPLE
from .. import export
from ..hub import parse_repo_id
from ..weights import load

# What a pushed card keeps of a model's training record when the visitor has not asked to publish their data's
# names: counts, settings and scores, never a file name (the zip's, a member's, a misclassified image's).
PUBLISHABLE_TRAINING = ("kind", "hyperparameters", "confusion_matrix", "per_class", "seconds", "notes", "stopped",
                        "misclassified_total")


def withhold_upload_names(info, name: str) -> None:
    """Strip from ``info`` (a model's WeightsInfo) whatever names the visitor's uploads, before a push.

    The bundled MNIST sample is not an upload and stays named. Labels stay: they are the model's classes.
    """
    if info.datasets == [MNIST_SAMPLE] and "continued_from" not in info.training:
        info.training = {**info.training, "name": name}
        return
    training = {k: v for k, v in info.training.items() if k in PUBLISHABLE_TRAINING}
    training["name"] = name
    if info.training.get("data"):
        training["data"] = (f"The uploader's own images in {len(info.labels)} classes "
                            f"(their file names are not published).")
    info.training, info.datasets = training, []


def push_stored_model(folder: Path, repo_id: str, token: str, *, include_data_names: bool = False) -> str:
    """Push a model of the store to ``repo_id``; its card names no uploaded file unless ``include_data_names``."""
    name = parse_repo_id(repo_id, allow_revision=False)[0].split("/")[1]  # a malformed id is refused before loading
    model = load(folder, device="cpu")
    if not include_data_names:
        withhold_upload_names(model.info, name)
    return model.push_to_hub(repo_id, token=token)


def zip_model_folder(folder: Path, out_dir: Path | None = None) -> Path:
    """A zip of a model folder for download, written under a temporary name and renamed.

    One zip per model in one folder (the system's temporary directory by default, one
    subfolder per owner's namespace: two visitors' ``my-pets`` are two zips), so repeated
    downloads do not pile up on disk.
    """
    if out_dir is None:
        namespace = hashlib.sha256(str(folder.resolve().parent).encode()).hexdigest()[:16]
        out_dir = Path(tempfile.gettempdir()) / "resnet-hub-downloads" / namespace
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f".{folder.name}.{uuid.uuid4().hex}.partial"
    tmp = Path(shutil.make_archive(str(partial), "zip", root_dir=folder.parent, base_dir=folder.name))
    final = out_dir / f"{folder.name}.zip"
    tmp.replace(final)
    return final


def model_downloads(folder: Path, out_dir: Path | None = None) -> tuple[list[Path], str]:
    """What a visitor downloads for a model: the zip of its folder and, when the exporter handles it, a checked
    ``.onnx`` beside it; and a line saying how the ONNX file was checked, or why there is none."""
    zipped = zip_model_folder(folder, out_dir)
    try:
        record = export.export_onnx(load(folder, device="cpu"), zipped.with_suffix(".onnx"))
    except export.ExportError as e:
        return [zipped], f"No ONNX download: {e}."
    return [zipped, record.path], record.describe()

