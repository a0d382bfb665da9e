"""Acceptance 6: the clipsearch CLI -- exit codes, --json schemas, one-line errors, reindex."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from indexer.cli import main
from indexer.config import ConfigError, load_config

from .checkpoints import write_random_checkpoint
from .indexer_helpers import REPO, cli_env, copy_images, run_cli, version_dir, write_config

RESULT_KEYS = {"rank", "id", "path", "score", "root", "width", "height", "taken_at", "camera",
               "size", "content_hash", "thumbnail"}  # fmt: skip
STATUS_KEYS = {"index_dir", "version", "model", "images", "indexed", "errors", "vectors", "faiss",
               "generation", "roots", "error_files", "watch", "fast_paths", "database", "ocr",
               "videos"}  # fmt: skip
REPORT_KEYS = {"scanned", "unchanged", "added", "updated", "touched", "moved", "copied", "errors",
               "removed", "encoded", "unreachable", "seconds", "images_per_second",
               "unlisted_folders", "concepts_lost"}  # fmt: skip


def _one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clipsearch: error: "), proc.stderr
    assert fragment in lines[0] and "Traceback" not in proc.stderr


@pytest.fixture
def library(tmp_path, coco_images, tiny_checkpoint):
    photos = copy_images(coco_images[:12], tmp_path / "photos")
    cfg = write_config(
        tmp_path / "c.yaml", [tmp_path / "photos"], tmp_path / "idx", tiny_checkpoint
    )
    return cfg, photos


def test_index_search_status_json(library):
    cfg, photos = library
    rep = json.loads(run_cli(["index", "--json"], cfg).stdout)
    assert set(rep) == REPORT_KEYS and rep["added"] == 12 and rep["encoded"] == 12

    proc = run_cli(["search", "a dog on a sofa", "-k", "3", "--json"], cfg)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"query", "image", "k", "cutoff", "candidates", "count", "terms", "results"}
    assert doc["k"] == 3 and doc["count"] == 3 and doc["candidates"] == 12
    assert doc["cutoff"] == "top_k" and doc["query"] == "a dog on a sofa"
    for rank, r in enumerate(doc["results"], 1):
        assert set(r) == RESULT_KEYS and r["rank"] == rank
        assert isinstance(r["score"], float) and os.path.exists(r["path"])
        assert r["width"] > 0 and r["height"] > 0 and os.path.exists(r["thumbnail"])
    first = doc["results"][0]

    doc = json.loads(run_cli(["search", "--image", f"id:{first['id']}", "-k", "1", "--json",
                              "--threshold", "0.5", "--folder", str(photos[0].parent)],
                             cfg).stdout)  # fmt: skip
    assert doc["results"][0]["id"] == first["id"] and doc["cutoff"] == "threshold"

    proc = run_cli(["search", "people", "--image", str(photos[1]), "--adaptive", "-k", "5"], cfg)
    assert proc.returncode == 0 and 1 <= len(proc.stdout.splitlines()) <= 5

    status = json.loads(run_cli(["status", "--json"], cfg).stdout)
    assert status["ocr"] == {"enabled": False, "read": 0, "with_text": 0, "errors": 0, "pending": 12}
    assert set(status) == STATUS_KEYS and status["videos"] == {"videos": 0, "frames": 0}
    assert set(status["fast_paths"]) == {"runtime", "model", "image_pipeline"}
    assert status["indexed"] == status["vectors"] == status["faiss"]["count"] == 12
    assert status["model"]["embed_dim"] == 64 and len(status["model"]["checkpoint_sha256"]) == 64
    assert status["roots"] == [{"path": str(photos[0].parent), "indexed": 12, "online": True}]
    text = run_cli(["status"], cfg)
    assert text.returncode == 0 and "12 indexed" in text.stdout

    # the console script is installed and equivalent
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "clipsearch"),
                           "--config", str(cfg), "status", "--json"], capture_output=True,
                          text=True, env=cli_env(), cwd=REPO, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and json.loads(proc.stdout)["indexed"] == 12


def test_user_errors_are_one_line(tmp_path, library):
    cfg, photos = library
    _one_line_error(run_cli(["status"], tmp_path / "missing.yaml"), "config file not found")
    _one_line_error(run_cli(["search", "x"], cfg), "no index in")
    bad = write_config(tmp_path / "bad.yaml", [tmp_path / "no-such-folder"], tmp_path / "idx2")
    _one_line_error(run_cli(["index"], bad), "library root not found")
    (tmp_path / "unknown.yaml").write_text("index:\n  dir: x\n  batchsize: 3\n")
    _one_line_error(run_cli(["status"], tmp_path / "unknown.yaml"), "'index.batchsize'")

    offline = write_config(tmp_path / "offline.yaml", [photos[0].parent], tmp_path / "idx3",
                           model={"name": "ViT-B/32", "cache_dir": str(tmp_path / "cache")})  # fmt: skip
    proc = run_cli(["index"], offline, env=cli_env(CLIPSEARCH_OFFLINE="1"))
    _one_line_error(proc, "not cached")

    missing_weights = write_config(tmp_path / "mw.yaml", [photos[0].parent], tmp_path / "idx4",
                                   tmp_path / "nope.pt")  # fmt: skip
    _one_line_error(run_cli(["index"], missing_weights), "model weights not found")

    _one_line_error(run_cli(["index", str(tmp_path / "typo")], cfg), "path not found")
    _one_line_error(run_cli(["index", "/"], cfg), "not inside any library root")

    # usage errors: argparse's exit code 2; ours for a search without a query
    assert run_cli(["frobnicate"], cfg).returncode == 2
    _one_line_error(run_cli(["search"], cfg), "give a QUERY")


def test_model_change_needs_reindex(tmp_path, library):
    cfg, photos = library
    assert run_cli(["index"], cfg).returncode == 0
    other = write_random_checkpoint(tmp_path / "other.pt", "tiny-vit", seed=1)
    env = cli_env(CLIPSEARCH_WEIGHTS=str(other))  # the env var overrides model.weights
    _one_line_error(run_cli(["index"], cfg, env=env), "clipsearch reindex")
    _one_line_error(run_cli(["search", "a cat"], cfg, env=env), "clipsearch reindex")
    old_version = version_dir(tmp_path / "idx")
    old_sha = json.loads(run_cli(["status", "--json"], cfg).stdout)["model"]["checkpoint_sha256"]

    rep = json.loads(run_cli(["reindex", "--json"], cfg, env=env).stdout)
    assert rep["added"] == 12 and rep["encoded"] == 12
    status = json.loads(run_cli(["status", "--json"], cfg).stdout)
    assert status["model"]["checkpoint_sha256"] != old_sha and status["indexed"] == 12
    assert version_dir(tmp_path / "idx") != old_version and not old_version.exists()
    proc = run_cli(["search", "a cat", "-k", "2", "--json"], cfg, env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["count"] == 2
    _one_line_error(run_cli(["search", "a cat"], cfg), "clipsearch reindex")  # old model now


def test_config_loading(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text("library:\n  roots: [photos, /abs]\nindex:\n  dir: ../idx\n  kind: hnsw\n")
    cfg = load_config(path)
    assert cfg.roots == [tmp_path / "sub" / "photos", __import__("pathlib").Path("/abs")]
    assert cfg.index_dir == tmp_path / "sub" / ".." / "idx" and cfg.index.kind == "hnsw"
    assert cfg.model.name == "ViT-B/32" and cfg.search.top_k == 20 and cfg.weights_path is None
    monkeypatch.setenv("CLIPSEARCH_WEIGHTS", str(tmp_path / "w.pt"))
    assert cfg.weights_path == tmp_path / "w.pt"
    monkeypatch.setenv("CLIPSEARCH_CONFIG", str(path))
    assert load_config().source == path
    for text, fragment in [
        ("nosuch: {}\n", "unknown config section 'nosuch'"),
        ("index: {kind: fast}\n", "index.kind"),
        ("index: {batch_size: many}\n", "index.batch_size: expected an integer"),
        ("library: {roots: data}\n", "library.roots: expected a list"),
        ("watch: {interval: 3}\n", "unknown config key 'watch.interval'"),
        ("model: [1, 2]\n", "model: expected a mapping"),
        ("index: {dir: [unclosed\n", "invalid YAML"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=None) as info:
            load_config(path)
        assert fragment in str(info.value) and "\n" not in str(info.value), str(info.value)
    # the repository's documented config.yaml is valid
    repo_cfg = load_config(REPO / "config.yaml")
    assert repo_cfg.library.roots == ["data/samples"] and repo_cfg.index.dir == "data/index"


def test_main_in_process(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.yaml"), "status"]) == 1
    assert "config file not found" in capsys.readouterr().err


def test_each_command_loads_only_its_module_and_help_lists_all():
    """``CORE_COMMANDS`` names every core command with the module that registers it (a run
    imports only that one); ``--help`` and unknown commands load them all, plugins too."""
    from indexer.cli import _command_word, registry

    registry.load_command_modules()
    core = {n: c.run.__module__ for n, c in registry.COMMANDS.items()
            if c.run.__module__.startswith("indexer.cli.")}  # fmt: skip
    assert core == registry.CORE_COMMANDS
    assert registry.command_modules("search") == ["indexer.cli.search"]
    assert "app.commands" in registry.command_modules("ui")  # a plugin's command: everything
    assert registry.command_modules(None)[: len(registry.CORE_MODULES)] == list(registry.CORE_MODULES)
    assert _command_word(["--config", "c.yaml", "search", "a dog"]) == "search"
    assert _command_word(["--config=c.yaml", "status"]) == "status"
    assert _command_word(["--help"]) is None and _command_word([]) is None
    helped = run_cli(["--help"])
    assert helped.returncode == 0
    for name in (*registry.CORE_COMMANDS, "ui"):
        assert name in helped.stdout, name
    wrong = run_cli(["serch", "a dog"])
    assert wrong.returncode == 2 and "invalid choice: 'serch'" in wrong.stderr
