"""The ``clipsearch ui`` server process: the model and the index load when the server starts.

    python -m app.serve run app/main.py --server.port 8501 ... -- --config config.yaml

Takes ``streamlit run``'s arguments. Before handing them to Streamlit, in this same process, it
loads the Library and the query encoder (``app.state.start_preload``) and runs one query, so
the page's first search finds everything warm instead of loading it then.
"""

from __future__ import annotations

import sys
import threading


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from app import state

    page_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    # Before the server, not beside it: on 2 cores both starting at once took 3-6x longer
    state.start_preload(state.config_path_from_argv(page_args)).join()
    from streamlit.web import cli

    sys.argv = ["streamlit", *argv]
    try:
        cli.main(prog_name="streamlit")
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "clipsearch-ui"
    raise SystemExit(main())
