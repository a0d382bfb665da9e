"""``clipsearch ui``: serve the photo search (Streamlit) on http://127.0.0.1:8501 by default.

    clipsearch [--config FILE] ui [--host HOST] [--port PORT] [--browser]

Host, port, password and upload limits come from the ``ui:`` config section; ``--host`` and
``--port`` override them. The config file is passed on to the page (``-- --config FILE``).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from indexer.cli.registry import UserError, command
from indexer.config import Config

from .safety import expected_password

MAIN = Path(__file__).resolve().parent / "main.py"


def _ui_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default: ui.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default: ui.port, 8501)")
    p.add_argument("--browser", action="store_true", help="also open a browser tab")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    """Raise UserError when ``host:port`` cannot be bound (in use, or not an address here)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"ui.host {host!r} is not a valid address: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise UserError(
                f"cannot listen on {host}:{port} ({exc.strerror}); is another `clipsearch ui` "
                "running? Pick another port with --port or ui.port"
            ) from None


def streamlit_command(cfg: Config, host: str, port: int, browser: bool = False) -> list[str]:
    """The ``streamlit run`` command line for the page with these settings (run by
    ``app.serve``, which loads the model and the index as the server starts)."""
    cmd = [
        sys.executable, "-m", "app.serve", "run", os.fspath(MAIN),  # streamlit, preloaded
        "--server.address", host, "--server.port", str(port),
        "--server.headless", "false" if browser else "true",
        "--server.maxUploadSize", str(cfg.ui.max_upload_mb),
        "--server.fileWatcherType", "none", "--server.runOnSave", "false",
        "--server.enableStaticServing", "false",
        "--browser.gatherUsageStats", "false", "--global.developmentMode", "false",
        "--client.toolbarMode", "minimal", "--client.showErrorDetails", "none",
    ]  # fmt: skip
    if cfg.source is not None:
        cmd += ["--", "--config", os.fspath(cfg.source)]
    return cmd


@command("ui", "open the photo search in the browser (Streamlit)", _ui_args)
def run_ui(args: argparse.Namespace, cfg: Config) -> int:
    host = args.host or cfg.ui.host
    port = cfg.ui.port if args.port is None else args.port
    if not 1 <= port <= 65535:
        raise UserError(f"--port: expected 1 to 65535, got {port}")
    check_port_free(host, port)
    if not is_loopback(host) and expected_password(cfg.ui.password) is None:
        print(
            f"clipsearch: warning: listening on {host} without a password; anyone who can reach "
            "this machine can see your photos (set ui.password)",
            file=sys.stderr,
        )
    shown = f"[{host}]" if ":" in host else host
    print(f"clipsearch: photo search on http://{shown}:{port}  (Ctrl+C to stop)", flush=True)
    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    proc = subprocess.Popen(streamlit_command(cfg, host, port, args.browser), env=env)

    def _stop(signum: int, frame: object) -> None:  # SIGTERM: stop the server with us
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
