"""The search view: query box, "without" box, example photo, options in the sidebar."""

from __future__ import annotations

import streamlit as st

from indexer.config import Config
from indexer.search.engine import QueryError, parse_date

from .. import safety, service, state
from ..tags import tag_source
from . import actions, errors, learn, results

QUERY_HELP = (
    "Plain language, e.g. `a dog on the beach`. Combine terms: `beach + sunset - people`; "
    "weigh them: `2:dog`; search by example: `img:/path/in/library.jpg` or `id:123`; "
    'text in the photo (OCR): `text:"invoice 2023"`.'
)


def _uploader_key() -> str:
    return f"upload_{st.session_state.get('upload_gen', 0)}"


_reset_page = actions.reset_page


def sidebar_options(cfg: Config, tags_available: list[str]) -> dict:
    """The search options in the sidebar; returns their values (checked)."""
    sb = st.sidebar
    sb.subheader("Search options")
    top_k = min(cfg.search.top_k, cfg.ui.max_results)
    st.session_state.setdefault("k", top_k)
    k = sb.slider("Number of results", 1, cfg.ui.max_results, key="k", on_change=_reset_page)
    st.session_state.setdefault("use_threshold", cfg.search.threshold is not None)
    st.session_state.setdefault("threshold", float(cfg.search.threshold or 0.2))
    use_threshold = sb.checkbox("Minimum score", key="use_threshold", on_change=_reset_page,
                                help="Drop results whose cosine score is below the threshold")  # fmt: skip
    threshold = sb.slider("Threshold", -1.0, 1.0, step=0.01, key="threshold",
                          disabled=not use_threshold, on_change=_reset_page)  # fmt: skip
    st.session_state.setdefault("adaptive", cfg.search.adaptive)
    adaptive = sb.toggle("Adaptive cutoff", key="adaptive", on_change=_reset_page,
                         help="Stop where scores no longer stand out from the library's")  # fmt: skip
    sort = sb.selectbox("Sort by", service.SORTS, key="sort", on_change=_reset_page)
    sb.subheader("Filters")
    folder = sb.text_input("Folder", key="folder", on_change=_reset_page,
                           placeholder="all folders",
                           help="A folder inside the library (absolute, or relative to a root)")  # fmt: skip
    c1, c2 = sb.columns(2)
    since = c1.text_input("From date", key="since", placeholder="YYYY-MM-DD", on_change=_reset_page)
    until = c2.text_input("To date", key="until", placeholder="YYYY-MM-DD", on_change=_reset_page)
    tags: list[str] = []
    if tags_available:
        kept = [t for t in st.session_state.get("tags", []) if t in tags_available]
        st.session_state.tags = kept
        tags = sb.multiselect("Tags", tags_available, key="tags", on_change=_reset_page)
    return {
        "k": int(k), "threshold": float(threshold) if use_threshold else None,
        "adaptive": bool(adaptive), "sort": sort, "folder": folder, "since": since,
        "until": until, "tags": tuple(tags),
    }  # fmt: skip


def _query_inputs(cfg: Config) -> tuple[str, str, safety.UploadInfo | None]:
    c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
    text = c1.text_input("Search photos", key="q", placeholder="a dog playing on the beach",
                         help=QUERY_HELP, on_change=_reset_page)  # fmt: skip
    without = c2.text_input("Without", key="without", placeholder="people, cars",
                            help="Comma-separated things to avoid", on_change=_reset_page)  # fmt: skip
    up = st.file_uploader(
        f"Search with a photo (up to {cfg.ui.max_upload_mb} MB)",
        type=["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"],
        key=_uploader_key(), on_change=_reset_page,
    )  # fmt: skip
    upload = None
    if up is not None:
        upload = safety.check_upload(
            up.getvalue(), up.name, cfg.ui.max_upload_mb, cfg.ui.max_upload_pixels
        )
    return text, without, upload


def _example_banner(lib, cfg: Config, upload: safety.UploadInfo | None) -> None:
    like_id = st.session_state.get("like_id")
    if like_id is None and upload is None:
        return
    with st.container(border=True):
        cols = st.columns([1, 6, 2], vertical_alignment="center")
        if upload is not None:
            cols[0].image(upload.data, width=64)
            cols[1].markdown(f"Searching with your photo **{upload.name}** "
                             f"({upload.width}x{upload.height})")  # fmt: skip
        else:
            rec = lib.get_image(like_id)
            thumb = results.thumb_bytes(lib, rec) if rec is not None else None
            if thumb:
                cols[0].image(thumb, width=64)
            name = rec.path.rsplit("/", 1)[-1] if rec is not None else f"#{like_id}"
            cols[1].markdown(f"More like **{name}** (id {like_id})")
        cols[2].button("Clear example", key="clear_example", on_click=actions.clear_example)


def build_request(
    text: str, without: str, upload, opts: dict, cfg: Config
) -> service.SearchRequest:
    """The request from the controls; raises UnsafePathError / QueryError for bad values."""
    folder = safety.folder_filter(opts["folder"], cfg.roots)
    parse_date(opts["since"] or None, False)  # checked here for a clear message
    parse_date(opts["until"] or None, True)
    return service.SearchRequest(
        text=text or "", without=without or "",
        image=upload.data if upload else None, image_name=upload.name if upload else None,
        like_id=st.session_state.get("like_id"), k=opts["k"], threshold=opts["threshold"],
        adaptive=opts["adaptive"], folder=folder, since=opts["since"] or None,
        until=opts["until"] or None, tags=opts["tags"], sort=opts["sort"],
        liked=actions.marked(1), unliked=actions.marked(-1),
    )  # fmt: skip


def render(lib, cfg: Config) -> None:
    """The whole search view (the library is open; the model may still be missing)."""
    tags = tag_source(lib)
    tag_names = sorted(tags.counts()) if tags is not None else []
    opts = sidebar_options(cfg, tag_names)
    try:
        text, without, upload = _query_inputs(cfg)
    except safety.UploadError as exc:
        errors.show(exc, cfg, inline=True)
        text, without, upload = (
            st.session_state.get("q", ""),
            st.session_state.get("without", ""),
            None,
        )
    _example_banner(lib, cfg, upload)
    try:
        req = build_request(text, without, upload, opts, cfg)
        learn.marks_bar(lib, cfg, req)
    except (safety.UnsafePathError, QueryError) as exc:
        errors.show(exc, cfg, inline=True)
        return
    status = lib.status(max_errors=0)
    if status["indexed"] == 0:
        st.info(
            f"The index has no photos yet ({status['errors']} files could not be read). "
            "Photos appear here as soon as `clipsearch index` (or the watch service) adds them."
        )
        return
    if not req.has_query():
        if req.tags and tags is not None:
            results.render(lib, cfg, service.browse_tags(lib, tags, req), req)
            return
        st.caption(f"{status['indexed']:,} photos indexed. {QUERY_HELP}")
        return
    with st.spinner("Loading the model…"):
        encoder = state.get_encoder(cfg)  # raises EncoderUnavailableError with the reason
    lib.store.check_model(encoder.identity)
    key = req.key(generation=status["generation"])
    last = st.session_state.get("_last_search")
    if last is None or last[0] != key:
        try:
            with st.spinner("Searching…"):
                outcome = service.run_search(lib, req, cfg.roots, tags)
        except (safety.UnsafePathError, QueryError) as exc:
            errors.show(exc, cfg, inline=True)
            return
        st.session_state._last_search = (key, outcome)
    else:
        outcome = last[1]
    results.render(lib, cfg, outcome, req)
