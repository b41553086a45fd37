"""resnet_hub.atomic: a file (or folder) appears whole under its name, or the old one stays."""

from __future__ import annotations

import os
import threading

import pytest
from PIL import Image

from resnet_hub import atomic


def test_write_bytes_gives_the_whole_file(tmp_path):
    path = tmp_path / "weights.bin"
    atomic.write_bytes(path, b"\x00\x01" * 100_000)
    assert path.read_bytes() == b"\x00\x01" * 100_000
    assert os.listdir(tmp_path) == ["weights.bin"]


def test_write_text_replaces_the_old_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old")
    atomic.write_text(path, '{"é": 1}')
    assert path.read_text(encoding="utf-8") == '{"é": 1}'


def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "choice.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic.atomic_path(path) as tmp:
            tmp.write_text("half of the ne")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["choice.json"]


def test_a_failure_while_filling_a_folder_leaves_no_temporary_folder(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(tmp_path / "ir") as staging:
            staging.mkdir()
            (staging / "model.xml").write_text("<net/>")
            raise RuntimeError("conversion failed")
    assert os.listdir(tmp_path) == []


def test_a_folder_appears_whole_under_its_name(tmp_path):
    with atomic.atomic_path(tmp_path / "ir") as staging:
        staging.mkdir()
        (staging / "model.xml").write_text("<net/>")
        assert not (tmp_path / "ir").exists()
    assert (tmp_path / "ir" / "model.xml").read_text() == "<net/>"
    assert os.listdir(tmp_path) == ["ir"]


def test_the_temporary_name_is_hidden_beside_the_target_and_ends_in_tmp(tmp_path):
    with atomic.atomic_path(tmp_path / "choice.json") as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".choice.json.") and tmp.name.endswith(".tmp")
        tmp.write_text("{}")


def test_keep_suffix_lets_a_writer_pick_the_format_by_suffix(tmp_path):
    path = tmp_path / "heatmap.png"
    with atomic.atomic_path(path, keep_suffix=True) as tmp:
        assert tmp.suffix == ".png"
        Image.new("RGB", (4, 4), "red").save(tmp)  # no format=: Pillow reads it from the suffix
    with Image.open(path) as image:
        assert image.format == "PNG"


def test_fsync_flushes_the_new_file_before_it_takes_the_name(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append((os.fstat(fd).st_ino, path.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic.write_bytes(path, b"weights", fsync=True)
    assert (path.stat().st_ino, False) in synced  # the file itself, while still under its temporary name
    assert (tmp_path.stat().st_ino, True) in synced  # then its folder, so the rename is on disk too


def test_concurrent_writers_of_one_path_never_leave_a_torn_file(tmp_path):
    path = tmp_path / "choice.json"
    contents = [bytes([i]) * 200_000 for i in range(4)]
    atomic.write_bytes(path, contents[0])
    done = threading.Event()
    seen = set()

    def write(data):
        for _ in range(25):
            atomic.write_bytes(path, data)

    def read():
        while not done.is_set():
            seen.add(path.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(data,)) for data in contents]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    done.set()
    reader.join()
    assert seen <= set(contents)
    assert path.read_bytes() in contents
    assert os.listdir(tmp_path) == ["choice.json"]
