"""clipsearch's photo search page (Streamlit).

    streamlit run app/main.py --server.address 127.0.0.1 -- --config config.yaml

``clipsearch ui`` runs this with the settings of the ``ui:`` config section. The page is thin:
the logic lives in ``app.service`` / ``app.safety`` (tested without a browser) and the drawing
in ``app.views``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # `streamlit run app/main.py` puts app/ first on sys.path
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from app import safety, state  # noqa: E402
from app.tags import tag_source  # noqa: E402
from app.views import detail, errors, learn, library, search  # noqa: E402
from app.views import tags as tags_view  # noqa: E402

# Widget values that survive switching views (Streamlit drops the state of widgets that a run
# does not draw; assigning the value to itself keeps it).
_KEPT = ("q", "without", "k", "use_threshold", "threshold", "adaptive", "sort", "folder",
         "since", "until", "tags")  # fmt: skip
_VIEWS = {"search": "Search", "library": "Library", "tags": "Tags", "albums": "Albums"}


def _keep_widget_state() -> None:
    for key in _KEPT:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def password_gate(expected: str | None) -> bool:
    """True when the page may be shown (no password configured, or this session signed in)."""
    if expected is None or st.session_state.get("authed"):
        return True
    st.title(":material/image_search: clipsearch")
    with st.form("login", clear_on_submit=True):
        given = st.text_input("Password", type="password", key="password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        if safety.password_ok(given, expected):
            st.session_state.authed = True
            st.rerun()
        time.sleep(0.5)  # slows down guessing
        st.error("Wrong password.")
    else:
        st.info("This photo library is protected by a password (setting `ui.password`).")
    return False


def read_query_params() -> list[Exception]:
    """Apply the link's parameters once per session: ``q``, ``id`` (detail), ``t`` (where its
    video plays from, ms), ``like``, ``view``.

    Ids are checked (digits only); anything else is reported and ignored.
    """
    if st.session_state.get("_params_read"):
        return []
    st.session_state._params_read = True
    params = st.query_params
    problems: list[Exception] = []
    if "q" in params:
        st.session_state.q = str(params["q"])[:1000]
    for name, key in (("id", "detail_id"), ("like", "like_id"), ("t", "detail_t")):
        if name in params:
            try:
                st.session_state[key] = safety.parse_image_id(
                    params[name], f"link parameter {name}"
                )
            except safety.UnsafePathError as exc:
                problems.append(exc)
                params.pop(name, None)
    view = str(params.get("view", "")).lower()
    if view in _VIEWS:
        st.session_state.view = _VIEWS[view]
    return problems


def main() -> None:
    st.set_page_config(page_title="clipsearch", page_icon=":material/image_search:", layout="wide")
    _keep_widget_state()
    try:
        cfg = state.get_config()
    except Exception as exc:  # noqa: BLE001 - ConfigError, or an unreadable file
        errors.show(exc)
        return
    if not password_gate(safety.expected_password(cfg.ui.password)):
        return
    problems = read_query_params()
    st.sidebar.title(":material/image_search: clipsearch")
    try:
        with state.library_lock():
            lib = state.get_library(cfg)
            tags = tag_source(lib)
            views = ["Search", "Albums", "Library"] + (["Tags"] if tags is not None else [])
            if st.session_state.get("view") not in views:
                st.session_state.view = "Search"
            view = st.sidebar.radio("View", views, key="view", horizontal=True,
                                    label_visibility="collapsed")  # fmt: skip
            for exc in problems:
                errors.show(exc, cfg, inline=True)
            detail_id = st.session_state.get("detail_id")
            if view == "Library":
                library.render(lib, cfg)
            elif view == "Albums":
                learn.render_albums(lib, cfg)
            elif view == "Tags" and tags is not None:
                tags_view.render(tags)
                learn.render_concepts(lib, cfg)
            elif detail_id is not None:
                detail.render(lib, cfg, int(detail_id))
            else:
                search.render(lib, cfg)
    except Exception as exc:  # noqa: BLE001 - every failure gets a page, never a traceback
        errors.show(exc, cfg)


main()
