"""Fixtures shared by the app tests (tests/test_app_*.py): a real index of real photos.

Imported by the other app test modules; it holds no tests itself.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.indexer_helpers import write_config

REPO = Path(__file__).resolve().parent.parent
MAIN = REPO / "app" / "main.py"


@dataclass
class AppEnv:
    """A library folder, its config file and its index, built by the real indexer."""

    dir: Path
    config: Path
    photos: Path
    images: list[Path]
    sub: list[Path]
    broken: Path
    weights: Path

    def variant(self, name: str, **sections: dict) -> Path:
        """A copy of the config with ``sections`` merged in (same library and index)."""
        data = yaml.safe_load(self.config.read_text())
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        path = self.dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path


def build_env(root: Path, sources: list[Path], weights: Path, n_sub: int = 3) -> AppEnv:
    """Copy ``sources`` (the last ``n_sub`` into ``sub/``) plus one broken file; index them."""
    from indexer.config import load_config
    from indexer.library import Library

    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    images, sub = [], []
    for i, src in enumerate(sources):
        in_sub = i >= len(sources) - n_sub
        dest = photos / ("sub" if in_sub else "") / src.name
        shutil.copyfile(src, dest)
        (sub if in_sub else images).append(dest)
    broken = photos / "broken.jpg"
    broken.write_bytes(b"this is not a photo")
    config = write_config(root / "config.yaml", [photos], root / "index", weights,
                          ui={"results_per_page": 6, "columns": 3})  # fmt: skip
    with Library.open(load_config(config), writer=True) as lib:
        lib.index(progress=False)
    return AppEnv(root, config, photos, images, sub, broken, weights)


@pytest.fixture(scope="session")
def app_env(tmp_path_factory, coco_images, tiny_checkpoint) -> AppEnv:
    """12 photos + 3 in a subfolder + 1 broken file, indexed with a random tiny CLIP."""
    return build_env(tmp_path_factory.mktemp("app_library"), coco_images[:15], tiny_checkpoint)


@pytest.fixture
def app_config_env(monkeypatch):
    """Point the app (run in-process by AppTest) at a config file via $CLIPSEARCH_CONFIG."""

    def use(config: Path) -> None:
        for key in list(os.environ):
            if key.startswith("CLIPSEARCH_") and key != "CLIPSEARCH_CACHE_DIR":
                monkeypatch.delenv(key)
        monkeypatch.setenv("CLIPSEARCH_CONFIG", os.fspath(config))

    return use
