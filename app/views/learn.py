"""Learning from marks: the marks bar (relevance feedback), teaching a concept from the results
marked good (or adding them to an existing one), saving the search as a smart album, the Albums
view, and the list of personal concepts under the tags.

Teaching and saving write to the index through :func:`indexer.cli.writes.write`: a short-lived
writer Library, or the running ``clipsearch watch`` daemon when it holds the writer lock.
"""

from __future__ import annotations

import streamlit as st

from indexer.cli import writes
from indexer.config import Config
from indexer.store import IndexBusyError

from .. import service, state
from . import actions, results


def _write(cfg: Config, op: str, **kwargs: object) -> dict | None:
    """Run write ``op`` (:mod:`indexer.cli.writes`); a one-line error on the page if it fails."""
    try:
        return writes.write(cfg, op, encoder=state.LazyEncoder(cfg), **kwargs)
    except IndexBusyError as exc:
        st.error(f"Cannot save now: {exc}")
    except (ValueError, PermissionError) as exc:  # ConceptError, AlbumError, QueryError
        st.error(str(exc))
    return None


def _album_query(req: service.SearchRequest) -> str | None:
    parts = [req.text.strip()] if req.text.strip() else []
    parts += [f"- {w.strip()}" for w in req.without.split(",") if w.strip()]
    if req.like_id is not None:
        parts.append(f"+ id:{req.like_id}")
    text = " ".join(parts).strip()
    return text.lstrip("+ ").strip() or None


def marks_bar(lib, cfg: Config, req: service.SearchRequest) -> None:  # noqa: ANN001
    """Marks summary, Clear marks, and the teach-a-concept / save-as-album panel."""
    good, bad = req.liked, req.unliked
    if not (good or bad or req.has_query()):
        return
    with st.container(border=True):
        c1, c2 = st.columns([5, 1], vertical_alignment="center")
        if good or bad:
            c1.markdown(f"Re-ranked from your marks: **{len(good)} good**, **{len(bad)} bad**")
            c2.button("Clear marks", key="clear_marks", on_click=actions.clear_marks)
        else:
            c1.caption("Mark results Good or Bad: the search re-ranks from your marks.")
        with st.expander("Teach a concept · save as album"):
            t1, t2 = st.columns([3, 2], vertical_alignment="bottom")
            name = t1.text_input("Concept name", key="concept_name", placeholder="my dog")
            if t2.button(f"Create concept from {len(good)} good", key="make_concept",
                         disabled=len(good) < 3,
                         help="At least 3 photos marked good; bad ones are counter-examples"):  # fmt: skip
                c = _write(cfg, "concept.teach", name=name, photos=list(good), negatives=list(bad))
                if c is not None:
                    st.success(f"Concept **{c['name']}** created: {c['photos']} photos carry it "
                               f"(tag “{c['name']}”).")  # fmt: skip
            _edit_row(lib, cfg, good, bad)
            a1, a2 = st.columns([3, 2], vertical_alignment="bottom")
            album = a1.text_input("Album name", key="album_name", placeholder="summer 2024")
            if a2.button("Save search as album", key="save_album"):
                a = _write(cfg, "album.save", name=album, query=_album_query(req),
                           like=list(good), unlike=list(bad), tags=list(req.tags),
                           folder=req.folder, since=req.since, until=req.until, k=req.k,
                           threshold=req.threshold, adaptive=req.adaptive)  # fmt: skip
                if a is not None:
                    st.success(f"Album **{a['name']}** saved (see Albums).")


def _edit_row(lib, cfg: Config, good: tuple, bad: tuple) -> None:  # noqa: ANN001
    """Refit an existing concept from the marks: good ones become examples, bad ones
    counter-examples (and stop being examples)."""
    names = sorted(c.name for c in lib.concepts.list())
    if not names:
        return
    e1, e2 = st.columns([3, 2], vertical_alignment="bottom")
    target = e1.selectbox("Existing concept", names, key="edit_concept")
    if e2.button(f"Add {len(good)} good, {len(bad)} bad to it", key="edit_concept_go",
                 disabled=not (good or bad),
                 help="Good marks join its examples, bad ones its counter-examples; it is "
                      "refitted at once"):  # fmt: skip
        c = _write(cfg, "concept.edit", name=target, add=list(good), remove=list(bad),
                   add_negatives=list(bad), remove_negatives=list(good))  # fmt: skip
        if c is not None:
            st.success(f"Concept **{c['name']}** refitted: {_count(c['examples'], 'example')}, "
                       f"{_count(c['negatives'], 'counter-example')}; {c['photos']} photos "
                       "carry it.")  # fmt: skip


def _count(items: list, word: str) -> str:
    return f"{len(items)} {word}{'' if len(items) == 1 else 's'}"


def render_albums(lib, cfg: Config) -> None:  # noqa: ANN001
    """The Albums view: every smart album with its photos now."""
    albums = lib.albums.list()
    st.header("Albums")
    _flash()
    if not albums:
        st.info("No albums yet. Search, mark results, then *Save search as album*; or run "
                "`clipsearch albums create NAME QUERY`.")  # fmt: skip
        return
    names = [a.name for a in albums]
    chosen = st.radio("Album", names, key="album", horizontal=True)
    album = albums[names.index(chosen)]
    import time

    t0 = time.perf_counter()
    res = lib.albums.run(album)
    outcome = service.SearchOutcome(res.hits, time.perf_counter() - t0, res.candidates,
                                    res.cutoff, res.terms)  # fmt: skip
    st.caption(f"Saved search: `{album.spec.get('query') or ''}` · "
               f"{len(album.spec.get('like', []))} good, {len(album.spec.get('unlike', []))} bad"
               f" · concepts: {', '.join(album.spec.get('concepts', [])) or 'none'}")  # fmt: skip
    _delete_button(cfg, "album.delete", album.name)
    results.render(lib, cfg, outcome, service.SearchRequest())


def render_concepts(lib, cfg: Config) -> None:  # noqa: ANN001
    """The personal concepts (below the tags): examples, photos carrying each, delete."""
    _flash()
    concepts = lib.concepts.list()
    if not concepts:
        return
    st.subheader("Your concepts")
    counts = lib.tag_counts()
    for c in concepts:
        c1, c2 = st.columns([6, 1], vertical_alignment="center")
        hint = f" · hint “{c.hint}”" if c.hint else ""
        c1.markdown(f"**{c.name}** · {_count(c.positives, 'example')} · "
                    f"{_count(c.negatives, 'counter-example')} · "
                    f"{counts.get(c.name, 0):,} photos{hint}")  # fmt: skip
        with c2:
            _delete_button(cfg, "concept.delete", c.name)


def _delete_button(cfg: Config, op: str, name: str) -> None:
    """A Delete popover whose button deletes concept or album ``name`` for good."""
    what = op.split(".")[0]
    with st.popover("Delete", help=f"Delete the {what} {name!r}"):
        if st.button(f"Delete {what} {name}", key=f"{op}_{name}", type="primary"):
            if _write(cfg, op, name=name) is not None:
                st.session_state["deleted"] = f"{what.capitalize()} **{name}** deleted."
                st.rerun()


def _flash() -> None:
    """What the last Delete did (it reran the page)."""
    done = st.session_state.pop("deleted", None)
    if done:
        st.success(done)
