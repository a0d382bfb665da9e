"""The library panel: what is indexed, what failed and why, the watch service, the model."""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from indexer.config import Config
from indexer.ingest.fastpaths import fast_path_lines

from .. import service


def render(lib, cfg: Config) -> None:  # noqa: ANN001
    status = lib.status(max_errors=500)
    watch = service.watch_status(lib, status)
    st.header("Library")
    c1, c2, c3, c4 = st.columns(4)
    videos = status.get("videos") or {}
    c1.metric("Photos indexed", f"{status['indexed']:,}",
              help=f"{videos['videos']:,} of them videos ({videos['frames']:,} frames searched)"
              if videos.get("videos") else None)  # fmt: skip
    c2.metric("Photos with errors", f"{status['errors']:,}")
    c3.metric("Watch service", "running" if watch["running"] else "not running")
    updated = watch["last_update"] or service.index_updated_at(lib)
    c4.metric("Last update", _when(updated, short=True), help=_when(updated))
    model = status["model"]
    sha = (model.get("checkpoint_sha256") or "")[:12]
    st.markdown(
        f"**Model:** {model.get('name') or 'unknown'} (checkpoint sha256 `{sha or '?'}`, "
        f"{model.get('embed_dim') or '?'} dimensions) · **Index:** `{status['index_dir']}` "
        f"({status['version']}, {status['faiss']['kind'] or 'empty'} FAISS index) · "
        f"**Watch service:** {watch['detail']}"
    )
    for label, text in fast_path_lines(status.get("fast_paths")):
        st.caption(f"**{'Model path' if label == 'runs' else 'Decoding'}:** {text}")
    st.subheader("Folders")
    counts = {r["path"]: r["indexed"] for r in status["roots"]}
    rows = [{"folder": str(r), "photos indexed": counts.pop(str(r), 0)} for r in cfg.roots]
    rows += [{"folder": p, "photos indexed": n} for p, n in counts.items()]
    st.table(rows, border="horizontal", hide_index=True)
    st.subheader("Files that could not be indexed")
    if not status["error_files"]:
        st.success("None: every file found was indexed.")
    else:
        shown = len(status["error_files"])
        if status["errors"] > shown:
            st.caption(f"The first {shown} of {status['errors']:,}.")
        rows = [{"file": e["path"], "reason": e["error"]} for e in status["error_files"]]
        if len(rows) <= 50:
            st.table(rows, border="horizontal", hide_index=True)
        else:  # scrollable
            st.dataframe(rows, hide_index=True, width="stretch")
    st.button("Refresh", key="refresh_library", help="New photos also appear on any action")


def _when(value, short: bool = False) -> str:  # noqa: ANN001 - float timestamp or ISO text
    if value is None:
        return "never"
    if isinstance(value, (int, float)):
        full = service.human_time(float(value))
        if not short:
            return full
        day, clock = full.split(" ")
        return clock[:5] if day == datetime.now().strftime("%Y-%m-%d") else day
    return str(value)
