"""Tests for clipmodel.download against a real local HTTP server (no internet)."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from clipmodel import download as dl

PAYLOAD = os.urandom(3 * 1024 * 1024 + 12345)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
FILENAME = "test-model.pt"
OFFICIAL = [
    "RN50",
    "RN101",
    "RN50x4",
    "RN50x16",
    "RN50x64",
    "ViT-B/32",
    "ViT-B/16",
    "ViT-L/14",
    "ViT-L/14@336px",
]


@dataclasses.dataclass
class ServerState:
    """Switches the tests flip, and what the server saw."""

    root: Path
    corrupt: bool = False
    cut_after: int | None = None  # send full Content-Length, write this many bytes, close
    ignore_range: bool = False
    delay: float = 0.0  # seconds to sleep between 64 KiB writes
    requests: list[tuple[str, str | None]] = dataclasses.field(default_factory=list)
    sent: list[int] = dataclasses.field(default_factory=list)  # body bytes sent per request
    url: str = ""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: ServerState  # set on a per-server subclass

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        st = self.state
        rng = self.headers.get("Range")
        st.requests.append((self.path, rng))
        path = st.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            st.sent.append(0)
            return
        data = path.read_bytes()
        if st.corrupt:
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and not st.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                st.sent.append(0)
                return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if st.cut_after is not None:
            body = body[: st.cut_after]
            self.close_connection = True
        step = 64 * 1024
        for i in range(0, len(body), step):
            self.wfile.write(body[i : i + step])
            if st.delay:
                time.sleep(st.delay)
        self.wfile.flush()
        st.sent.append(len(body))
        if st.cut_after is not None:
            self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CLIPSEARCH_OFFLINE", "CLIPSEARCH_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server(tmp_path: Path):
    files = tmp_path / "srv"
    files.mkdir()
    (files / FILENAME).write_bytes(PAYLOAD)
    state = ServerState(root=files)
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/{FILENAME}"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def model(server: ServerState):
    dl.register_model("test-model", server.url, PAYLOAD_SHA)
    yield "test-model"
    dl.MODELS.pop("test-model", None)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "clip"


def test_download_verifies_and_then_uses_cache(server, model, cache):
    path = dl.download(model, cache, progress=True)
    assert path == cache / FILENAME
    assert path.read_bytes() == PAYLOAD
    assert dl.sha256_file(path) == PAYLOAD_SHA
    assert not (cache / (FILENAME + ".part")).exists()
    assert len(server.requests) == 1
    assert dl.download(model, cache, progress=False) == path
    assert len(server.requests) == 1  # served from the cache


def test_corrupted_download_is_rejected(server, model, cache):
    server.corrupt = True
    with pytest.raises(dl.ChecksumMismatchError) as info:
        dl.download(model, cache, progress=False)
    msg = str(info.value)
    assert PAYLOAD_SHA in msg and server.url in msg
    assert not (cache / FILENAME).exists()
    assert not (cache / (FILENAME + ".part")).exists()


def test_interrupted_download_resumes_with_range(server, model, cache):
    cut = 1024 * 1024 + 7
    server.cut_after = cut
    with pytest.raises(dl.CheckpointUnavailableError) as info:
        dl.download(model, cache, progress=False, timeout=5)
    assert server.url in str(info.value)
    part = cache / (FILENAME + ".part")
    assert part.stat().st_size == cut
    assert not (cache / FILENAME).exists()

    server.cut_after = None
    path = dl.download(model, cache, progress=False)
    assert server.requests[-1][1] == f"bytes={cut}-"
    assert server.sent[-1] == len(PAYLOAD) - cut  # only the remainder was transferred
    assert path.read_bytes() == PAYLOAD
    assert not part.exists()


def test_server_ignoring_range_restarts(server, model, cache):
    cache.mkdir(parents=True)
    (cache / (FILENAME + ".part")).write_bytes(b"garbage that must not survive" * 100)
    server.ignore_range = True
    path = dl.download(model, cache, progress=False)
    assert server.requests[-1][1] is not None  # a Range was asked for, and ignored
    assert path.read_bytes() == PAYLOAD


def test_complete_part_with_416_is_verified(server, model, cache):
    cache.mkdir(parents=True)
    (cache / (FILENAME + ".part")).write_bytes(PAYLOAD)
    path = dl.download(model, cache, progress=False)
    assert server.requests == [(f"/{FILENAME}", f"bytes={len(PAYLOAD)}-")]
    assert path.read_bytes() == PAYLOAD


def test_offline_without_cache_raises_without_network(server, model, cache, monkeypatch):
    monkeypatch.setenv("CLIPSEARCH_OFFLINE", "1")
    with pytest.raises(dl.CheckpointUnavailableError) as info:
        dl.download(model, cache, progress=False)
    msg = str(info.value)
    assert str(cache / FILENAME) in msg
    assert "CLIPSEARCH_WEIGHTS" in msg and "model.weights" in msg and server.url in msg
    assert server.requests == []


def test_offline_with_cached_file(server, model, cache, monkeypatch):
    cache.mkdir(parents=True)
    (cache / FILENAME).write_bytes(PAYLOAD)
    monkeypatch.setenv("CLIPSEARCH_OFFLINE", "TRUE")
    assert dl.download(model, cache, progress=False) == cache / FILENAME
    assert server.requests == []


def test_cached_file_with_wrong_hash_is_replaced(server, model, cache):
    cache.mkdir(parents=True)
    (cache / FILENAME).write_bytes(b"not the model")
    with pytest.warns(UserWarning, match="expected"):
        path = dl.download(model, cache, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_unreachable_server(cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/dead.pt"
    dl.register_model("dead-model", url, "0" * 64)
    try:
        with pytest.raises(dl.CheckpointUnavailableError, match=re.escape(url)):
            dl.download("dead-model", cache, progress=False, timeout=5)
    finally:
        dl.MODELS.pop("dead-model", None)


def test_http_error_is_unavailable(server, model, cache):
    (server.root / FILENAME).unlink()
    with pytest.raises(dl.CheckpointUnavailableError, match="404"):
        dl.download(model, cache, progress=False)


def test_concurrent_downloads_are_serialised(server, model, cache):
    server.delay = 0.002  # make the two downloads overlap if they were not locked
    results: list[Path | BaseException] = []

    def worker() -> None:
        try:
            results.append(dl.download(model, cache, progress=False))
        except BaseException as e:  # reported by the assert below
            results.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert results == [cache / FILENAME] * 2
    assert len(server.requests) == 1
    assert (cache / FILENAME).read_bytes() == PAYLOAD


def test_unknown_model():
    with pytest.raises(ValueError, match="ViT-B/32"):
        dl.download("no-such-model")


def test_model_table():
    assert dl.available_models()[:9] == OFFICIAL
    for name, src in dl.MODELS.items():
        assert src.name == name
        assert src.url.split("/")[-2] == src.sha256
        assert src.url.endswith("/" + src.filename)
    assert dl.MODELS["ViT-L/14@336px"].filename == "ViT-L-14-336px.pt"
    official = {dl.MODELS[n].sha256 for n in OFFICIAL}
    assert len(official) == 9 and official <= dl.known_sha256s()
    with pytest.raises(dataclasses.FrozenInstanceError):
        dl.MODELS["RN50"].url = "x"  # type: ignore[misc]


def test_register_model_validates_and_extends():
    with pytest.raises(ValueError):
        dl.register_model("bad", "http://127.0.0.1/x.pt", "abc")
    try:
        dl.register_model("mirror", "http://127.0.0.1/m/x.pt", "AB" * 32)
        assert dl.available_models()[-1] == "mirror"
        assert dl.MODELS["mirror"].filename == "x.pt"
        assert "ab" * 32 in dl.known_sha256s()
    finally:
        dl.MODELS.pop("mirror", None)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dl.default_cache_dir() == tmp_path / "home" / ".cache" / "clip"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dl.default_cache_dir() == tmp_path / "xdg" / "clip"
    monkeypatch.setenv("CLIPSEARCH_CACHE_DIR", str(tmp_path / "mine"))
    assert dl.default_cache_dir() == tmp_path / "mine"


def test_download_defaults_to_cache_dir(server, model, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSEARCH_CACHE_DIR", str(tmp_path / "envcache"))
    assert dl.download(model, progress=False) == tmp_path / "envcache" / FILENAME


@pytest.mark.parametrize("value,expected", [("1", True), ("Yes", True), ("0", False), ("", False)])
def test_is_offline(monkeypatch, value, expected):
    monkeypatch.setenv("CLIPSEARCH_OFFLINE", value)
    assert dl.is_offline() is expected
