"""The results grid: cached square thumbnails with scores, paging, open / more like this."""

from __future__ import annotations

import os
import re

import streamlit as st

from indexer.config import Config

from .. import safety, service, state
from . import actions


def thumb_bytes(lib, rec, t_ms: int | None = None) -> bytes | None:  # noqa: ANN001 - Library, Record
    """The square grid thumbnail of a record, a video's frame at ``t_ms`` when given (None:
    it has none, or it cannot be read)."""
    path = lib.thumbnail_path(rec, t_ms)
    if path is None:
        return None
    try:
        real = safety.file_inside(path, lib.thumb_dir)
        mtime, _ = state.file_stamp(real)
        return state.square_thumbnail(os.fspath(real), mtime)
    except (safety.UnsafePathError, OSError, ValueError):
        return None


def _placeholder() -> None:
    st.markdown(
        "<div style='aspect-ratio:1;display:flex;align-items:center;justify-content:center;"
        "background:#eee;color:#888;border-radius:6px'>no preview</div>",
        unsafe_allow_html=True,
    )


def _summary(outcome: service.SearchOutcome) -> str:
    n = len(outcome.hits)
    noun = "photo" if n == 1 else "photos"
    cut = {"threshold": " (minimum score)", "adaptive": " (adaptive cutoff)"}.get(
        outcome.cutoff, ""
    )
    return (f"**{n} {noun}**{cut} · searched {outcome.candidates:,} in "
            f"**{service.latency_text(outcome.seconds)}**")  # fmt: skip


def render(lib, cfg: Config, outcome: service.SearchOutcome, req: service.SearchRequest) -> None:  # noqa: ANN001
    if not outcome.hits:
        st.info(
            "No photos match this search. Try other words, lower or switch off the minimum "
            "score, switch off the adaptive cutoff, or widen the filters."
        )
        st.caption(f"Query latency: {service.latency_text(outcome.seconds)}")
        return
    per_page = cfg.ui.results_per_page
    pages = service.page_count(len(outcome.hits), per_page)
    head, pager = st.columns([4, 1], vertical_alignment="bottom")
    head.markdown(_summary(outcome))
    page = 1
    if pages > 1:
        st.session_state.page = min(max(1, int(st.session_state.get("page", 1))), pages)
        page = int(pager.number_input(f"Page (of {pages})", 1, pages, step=1, key="page"))
    items = service.page_slice(outcome.hits, page, per_page)
    ncols = cfg.ui.columns
    for row_start in range(0, len(items), ncols):
        cols = st.columns(ncols)
        for col, hit in zip(cols, items[row_start : row_start + ncols]):
            with col:
                _cell(lib, hit)


def _cell(lib, hit) -> None:  # noqa: ANN001
    best = hit.moments[0][0] if getattr(hit, "moments", None) else None  # a video's moment
    thumb = thumb_bytes(lib, hit.record, best)
    name = os.path.basename(hit.path)
    if thumb is not None:
        st.image(thumb, width="stretch", alt=name)
    else:
        _placeholder()
    score = "—" if hit.score != hit.score else f"{hit.score:.3f}"  # NaN: browsing by tag
    st.caption(f"**{score}** · {name}")
    if hit.record.is_video:
        at = ", ".join(service.clock(t) for t, _ in hit.moments or [])
        st.caption(f"Video {service.clock(hit.record.duration_ms)}" + (f" · at {at}" if at else ""))
        st.button(f"▶ Play at {service.clock(best)}" if best is not None else "▶ Play",
                  key=f"play_{hit.id}", on_click=actions.open_detail, args=(hit.id, best),
                  width="stretch")  # fmt: skip
    if getattr(hit, "text", None):  # the recognised text a text: term matched
        st.caption("Text: " + re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", hit.text))
    mark = st.session_state.get("marks", {}).get(hit.id)
    g, b = st.columns(2)
    g.button("Good ✓" if mark == 1 else "Good", key=f"good_{hit.id}", width="stretch",
             type="primary" if mark == 1 else "secondary", on_click=actions.toggle_mark,
             args=(hit.id, 1), help="Mark as a good result: the search learns from it")  # fmt: skip
    b.button("Bad ✓" if mark == -1 else "Bad", key=f"bad_{hit.id}", width="stretch",
             type="primary" if mark == -1 else "secondary", on_click=actions.toggle_mark,
             args=(hit.id, -1), help="Mark as a bad result: the search moves away from it")  # fmt: skip
    b1, b2 = st.columns(2)
    b1.button("Details", key=f"open_{hit.id}", on_click=actions.open_detail, args=(hit.id,),
              width="stretch", help=hit.path)  # fmt: skip
    b2.button("Similar", key=f"like_{hit.id}", on_click=actions.more_like, args=(hit.id,),
              width="stretch", help="More like this")  # fmt: skip
