"""Button callbacks shared by the views (they run before the page script reruns)."""

from __future__ import annotations

import streamlit as st


def _bump_upload() -> None:
    st.session_state.upload_gen = st.session_state.get("upload_gen", 0) + 1


def clear_example() -> None:
    """Forget the example photo (uploaded or "more like this")."""
    st.session_state.like_id = None
    _bump_upload()
    st.session_state.page = 1


def more_like(image_id: int) -> None:
    """Search by an indexed photo instead of the text."""
    st.session_state.like_id = int(image_id)
    st.session_state.detail_id = None
    st.session_state.q = ""
    st.session_state.without = ""
    st.session_state.view = "Search"
    _bump_upload()
    st.session_state.page = 1
    st.query_params.pop("id", None)


def open_detail(image_id: int, t_ms: int | None = None) -> None:
    """Show one photo; a video plays from ``t_ms`` (its best moment)."""
    st.session_state.detail_id = int(image_id)
    st.session_state.detail_t = None if t_ms is None else int(t_ms)
    st.query_params["id"] = str(int(image_id))
    if t_ms is None:
        st.query_params.pop("t", None)
    else:
        st.query_params["t"] = str(int(t_ms))


def seek(t_ms: int) -> None:
    """Play the open video from ``t_ms``."""
    open_detail(int(st.session_state.detail_id), t_ms)


def close_detail() -> None:
    st.session_state.detail_id = None
    st.session_state.detail_t = None
    st.query_params.pop("id", None)
    st.query_params.pop("t", None)


def reset_page() -> None:
    st.session_state.page = 1


def toggle_mark(image_id: int, value: int) -> None:
    """Mark a result good (+1) or bad (-1); the same mark again removes it."""
    marks = dict(st.session_state.get("marks", {}))
    if marks.get(int(image_id)) == value:
        marks.pop(int(image_id))
    else:
        marks[int(image_id)] = value
    st.session_state.marks = marks


def clear_marks() -> None:
    st.session_state.marks = {}
    st.session_state.page = 1


def marked(value: int) -> tuple[int, ...]:
    """Ids marked good (1) or bad (-1), in marking order."""
    return tuple(i for i, v in st.session_state.get("marks", {}).items() if v == value)
