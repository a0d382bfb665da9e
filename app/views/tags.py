"""The tags view: every tag with its number of photos; pick one to search by it."""

from __future__ import annotations

import streamlit as st

from ..tags import TagSource


def _filter_by(tag: str) -> None:
    st.session_state.tags = [tag]
    st.session_state.view = "Search"
    st.session_state.page = 1


def render(tags: TagSource) -> None:
    st.header("Tags")
    counts = tags.counts()
    if not counts:
        st.info("No photo has a tag yet. Run `clipsearch tag` to tag the library.")
        return
    st.caption(f"{len(counts)} tags. Pick one to see its photos in the search view.")
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ncols = 4
    for start in range(0, len(ordered), ncols):
        cols = st.columns(ncols)
        for col, (tag, n) in zip(cols, ordered[start : start + ncols]):
            col.button(f"{tag} ({n:,})", key=f"tag_{tag}", on_click=_filter_by, args=(tag,),
                       width="stretch")  # fmt: skip
