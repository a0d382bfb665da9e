"""One photo, full size, with its metadata (path, date, size, camera, tags)."""

from __future__ import annotations

import html
import os

import streamlit as st

from indexer.config import Config
from indexer.embed.images import BadImage

from .. import safety, service, state
from ..tags import tag_source
from . import actions, errors, results


def metadata_rows(rec, tags: list[tuple[str, float]] | None) -> list[tuple[str, str]]:  # noqa: ANN001
    """(label, value) pairs shown beside the photo."""
    dims = f"{rec.width} x {rec.height} pixels" if rec.width and rec.height else "unknown"
    if rec.is_video:
        dims += f" · {service.clock(rec.duration_ms)} video"
    rows = [
        ("Path", rec.path),
        ("Taken", service.human_date(rec.taken_at)),
        ("Size", f"{service.human_size(rec.size)} · {dims}"),
        ("Camera", rec.camera or "unknown"),
        ("Indexed", service.human_time(rec.indexed_at)),
        ("Image id", str(rec.id)),
    ]
    if tags is not None:
        text = ", ".join(t for t, _ in tags) if tags else "none"
        rows.append(("Tags", text))
    if rec.status != "ok":
        rows.append(("Index error", rec.error or rec.status))
    return rows


def render(lib, cfg: Config, image_id: int) -> None:  # noqa: ANN001
    st.button("← Back to results", key="back", on_click=actions.close_detail)
    rec = lib.get_image(image_id)
    if rec is None:
        st.warning(f"There is no photo with id {image_id} in the index (it may have been removed).")
        return
    name = os.path.basename(rec.path)
    st.subheader(name)
    left, right = st.columns([3, 2])
    with left:
        try:
            real = safety.indexed_file(rec.path, cfg.roots, cfg.library.follow_symlinks)
            if rec.is_video:
                return _video(lib, rec, real, right)
            mtime, _ = state.file_stamp(real)
            data = state.display_image(os.fspath(real), mtime, rec.size or 0,
                                       cfg.library.max_pixels)  # fmt: skip
            st.image(data, width="stretch", alt=name)
        except (safety.UnsafePathError, BadImage, OSError) as exc:
            errors.show(exc, cfg, inline=True)
            thumb = results.thumb_bytes(lib, rec)
            if thumb is not None:
                st.image(thumb, caption="Thumbnail from the index", width=256)
    _facts(lib, rec, right)


_PLAYABLE_BYTES = 2**30
_MIME = {".webm": "video/webm", ".mkv": "video/webm", ".ogv": "video/ogg"}  # else video/mp4


def _video(lib, rec, real, right) -> None:  # noqa: ANN001
    """A video plays from the chosen moment; its sampled frames are shown to jump to."""
    start = int(st.session_state.get("detail_t") or 0)
    if (rec.size or 0) <= _PLAYABLE_BYTES:  # Streamlit serves the file from memory
        mime = _MIME.get(os.path.splitext(rec.path)[1].lower(), "video/mp4")
        st.video(os.fspath(real), format=mime, start_time=start // 1000)
        st.caption(f"Playing from {service.clock(start)} of {service.clock(rec.duration_ms)}")
    else:  # the frame at that moment, decoded from the file
        mtime, _ = state.file_stamp(real)
        st.image(state.video_frame(os.fspath(real), mtime, start), width="stretch")
        st.info(f"This video ({service.human_size(rec.size)}) is too large to play here: "
                f"open {rec.path} at {service.clock(start)}.")  # fmt: skip
    times, _ = lib.store.frames(rec.id)
    cols = st.columns(6)
    for n, t in enumerate(times.tolist()[:36]):
        with cols[n % 6]:
            thumb = results.thumb_bytes(lib, rec, t)
            if thumb is not None:
                st.image(thumb, width="stretch")
            st.button(service.clock(t), key=f"seek_{t}", on_click=actions.seek, args=(t,),
                      width="stretch")  # fmt: skip
    _facts(lib, rec, right)


def _facts(lib, rec, right) -> None:  # noqa: ANN001
    with right:
        tags = tag_source(lib)
        tag_list = tags.tags_of(rec.id) if tags is not None else None
        found = lib.ocr.image_text(rec.id)
        text = [("Text", found.text or "none found" if found.status == "ok" else
                 f"not read: {found.error}")] if found is not None else []  # fmt: skip
        rows = "".join(
            f"<tr><th style='text-align:left;padding-right:1em;vertical-align:top'>"
            f"{html.escape(k)}</th><td style='word-break:break-all;white-space:pre-line'>"
            f"{html.escape(v)}</td></tr>" for k, v in metadata_rows(rec, tag_list) + text
        )
        st.markdown(f"<table>{rows}</table>", unsafe_allow_html=True)
        if rec.status == "ok":
            st.button("More like this", key="detail_like", type="primary",
                      on_click=actions.more_like, args=(rec.id,))  # fmt: skip
