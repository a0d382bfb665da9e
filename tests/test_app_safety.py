"""Unit tests of the app's logic outside Streamlit: path checks, uploads, password, search
helpers and the ``clipsearch ui`` command."""

from __future__ import annotations

import io
import os
import socket

import pytest
from PIL import Image

from app import commands, safety, service
from indexer.config import ConfigError, config_from_dict
from indexer.search.engine import QueryError


def jpeg(size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def lib_dirs(tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / "a.jpg").write_bytes(jpeg())
    (root / "sub" / "b.jpg").write_bytes(jpeg())
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(jpeg())
    (root / "escape.jpg").symlink_to(outside)
    (root / "escape_dir").symlink_to(tmp_path)
    return root, outside


def test_resolve_inside_roots(lib_dirs):
    root, outside = lib_dirs
    assert safety.resolve_inside_roots(str(root / "a.jpg"), [root]) == root / "a.jpg"
    assert safety.resolve_inside_roots("sub/b.jpg", [root]) == root / "sub" / "b.jpg"
    for bad in (str(outside), "../secret.jpg", "sub/../../secret.jpg", "escape.jpg",
                str(root / "escape.jpg"), "escape_dir/secret.jpg", "/etc/passwd",
                "a.jpg\x00.png", "", "   ", "x" * 5000):  # fmt: skip
        with pytest.raises(safety.UnsafePathError):
            safety.resolve_inside_roots(bad, [root])
    with pytest.raises(safety.UnsafePathError, match="no such file"):
        safety.resolve_inside_roots("missing.jpg", [root])
    with pytest.raises(safety.UnsafePathError):
        safety.resolve_inside_roots(str(root / "sub"), [root])  # a folder is not a file


def test_folder_filter(lib_dirs):
    root, _ = lib_dirs
    assert safety.folder_filter("", [root]) is None
    assert safety.folder_filter("sub", [root]) == str(root / "sub")
    assert safety.folder_filter(str(root), [root]) == str(root)
    for bad in ("..", "/", "sub/../..", "escape_dir", "a.jpg"):
        with pytest.raises(safety.UnsafePathError):
            safety.folder_filter(bad, [root])


def test_parse_image_id():
    assert safety.parse_image_id("12") == 12 and safety.parse_image_id(7) == 7
    for bad in ("../1", "-1", "0", "1.0", "1e3", "１２", "", "9" * 30, True, "12/..", " "):
        with pytest.raises(safety.UnsafePathError):
            safety.parse_image_id(bad)


def test_indexed_file_and_file_inside(lib_dirs, tmp_path):
    root, outside = lib_dirs
    assert safety.indexed_file(str(root / "a.jpg"), [root]) == root / "a.jpg"
    assert safety.indexed_file(str(root / "escape.jpg"), [root]) == outside  # followed link
    with pytest.raises(safety.UnsafePathError):
        safety.indexed_file(str(root / "escape.jpg"), [root], follow_symlinks=False)
    with pytest.raises(safety.UnsafePathError):
        safety.indexed_file(str(outside), [root])
    with pytest.raises(safety.UnsafePathError):
        safety.indexed_file(str(root / ".." / "secret.jpg"), [root])
    assert safety.file_inside(root / "sub" / "b.jpg", root) == root / "sub" / "b.jpg"
    with pytest.raises(safety.UnsafePathError):
        safety.file_inside(root / "escape.jpg", root)


def test_check_upload():
    info = safety.check_upload(jpeg((40, 30)), "q.jpg", max_mb=1, max_pixels=10_000)
    assert (info.width, info.height, info.name) == (40, 30, "q.jpg")
    with pytest.raises(safety.UploadError, match="1 MB"):
        safety.check_upload(b"\xff" * (1024 * 1024 + 1), "big.jpg", 1, 10**9)
    with pytest.raises(safety.UploadError, match="pixels"):
        safety.check_upload(jpeg((200, 100)), "wide.jpg", 1, 10_000)
    with pytest.raises(safety.UploadError, match="not an image"):
        safety.check_upload(b"<html>", "x.jpg", 1, 10**9)
    with pytest.raises(safety.UploadError, match="empty"):
        safety.check_upload(b"", "x.jpg", 1, 10**9)
    # a decompression bomb's header is read without decoding its pixels
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")
    with pytest.raises(safety.UploadError, match="pixels"):
        safety.check_upload(buf.getvalue(), "bomb.png", 20, 50_000_000)


def test_password(monkeypatch):
    monkeypatch.delenv(safety.PASSWORD_ENV, raising=False)
    assert safety.expected_password(None) is None
    assert safety.expected_password("s3cret") == "s3cret"
    monkeypatch.setenv(safety.PASSWORD_ENV, "from-env")
    assert safety.expected_password("s3cret") == "from-env"
    assert safety.password_ok("pässword", "pässword")
    assert not safety.password_ok("passwor", "password") and not safety.password_ok(None, "x")


def test_build_terms(lib_dirs):
    root, outside = lib_dirs
    terms = service.build_terms("beach + 2:sunset", "people, 3:cars", [root])
    assert [(t.weight, t.value) for t in terms] == [
        (1.0, "beach"), (2.0, "sunset"), (-1.0, "people"), (-3.0, "cars")]  # fmt: skip
    terms = service.build_terms(f'dog + img:"{root}/a.jpg" - id:4', "", [root])
    assert terms[1].value == str(root / "a.jpg") and terms[2].value == "id:4"
    assert service.build_terms("", "", [root]) == []
    with pytest.raises(safety.UnsafePathError):
        service.build_terms(f"img:{outside}", "", [root])
    with pytest.raises(QueryError):
        service.build_terms("dog + + cat", "", [root])


def test_sort_and_pages():
    from indexer.search.engine import SearchHit
    from indexer.store import Record

    def hit(i, date):
        rec = Record(i, f"/p/{i}.jpg", "/p", 1, 1, "h", 1, 1, date, None, "ok", None, 0.0)
        return SearchHit(i, 1.0 - i / 10, rec)

    hits = [hit(1, "2020-01-01T00:00:00"), hit(2, None), hit(3, "2021-05-01T00:00:00")]
    assert [h.id for h in service.sort_hits(hits, "relevance")] == [1, 2, 3]
    assert [h.id for h in service.sort_hits(hits, "newest first")] == [3, 1, 2]
    assert [h.id for h in service.sort_hits(hits, "oldest first")] == [1, 3, 2]
    assert service.page_count(0, 5) == 1 and service.page_count(11, 5) == 3
    assert service.page_slice(list(range(11)), 3, 5) == [10]
    assert service.page_slice(list(range(11)), 9, 5) == [10]  # clamped
    assert service.human_size(2048) == "2.0 KB" and service.human_size(None) == "unknown"
    assert service.latency_text(0.0123) == "12 ms"


def test_watch_status_feature_detection():
    class NoWatch:
        pass

    class Watch:
        def watch_status(self):
            return {"running": True, "last_update": 1700000000.0, "pid": 42}

    assert service.watch_status(NoWatch(), {})["detail"] == "not running"
    w = service.watch_status(Watch(), {})
    assert w["running"] and w["last_update"] == 1700000000.0 and "42" in w["detail"]
    w = service.watch_status(NoWatch(), {"watch": {"running": False, "updated_at": "x"}})
    assert not w["running"] and w["last_update"] == "x"


def test_ui_config_validation():
    cfg = config_from_dict({})
    assert (cfg.ui.host, cfg.ui.port, cfg.ui.password) == ("127.0.0.1", 8501, None)
    for bad in ({"port": 0}, {"port": 70000}, {"password": ""}, {"max_upload_mb": 0},
                {"columns": 0}, {"host": " "}, {"nope": 1}):  # fmt: skip
        with pytest.raises(ConfigError, match="ui"):
            config_from_dict({"ui": bad})


def test_streamlit_command(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("ui: {max_upload_mb: 7}\n")
    from indexer.config import load_config

    cfg = load_config(cfg_file)
    cmd = commands.streamlit_command(cfg, "127.0.0.1", 8600)
    joined = " ".join(cmd)
    assert "-m app.serve run" in joined and joined.endswith(f"-- --config {cfg_file}")
    assert "--server.address 127.0.0.1" in joined and "--server.port 8600" in joined
    assert "--server.headless true" in joined and "--server.maxUploadSize 7" in joined
    assert "--browser.gatherUsageStats false" in joined
    assert commands.is_loopback("127.0.0.1") and commands.is_loopback("::1")
    assert not commands.is_loopback("0.0.0.0")


def test_ui_command_registered_and_port_in_use(tmp_path, capsys):
    from indexer import cli

    parser = cli.build_parser()
    args = parser.parse_args(["ui", "--port", "8600"])
    assert args.command == "ui" and args.port == 8600
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = cli.main(["--config", os.fspath(_empty_config(tmp_path)), "ui", "--port", str(port)])
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def _empty_config(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text("library: {roots: [.]}\n")
    return p


def test_config_path_from_argv():
    from app.state import config_path_from_argv

    assert config_path_from_argv(["--config", "a.yaml"]) == "a.yaml"
    assert config_path_from_argv(["--config=b.yaml"]) == "b.yaml"
    assert config_path_from_argv(["-q", "--config-file", "x"]) is None
