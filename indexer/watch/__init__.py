"""Watching: keep the index current while photos change (``clipsearch watch``).

``roots`` (observers per library root), ``debounce`` (pending paths until stable), ``logs``,
``status`` (the status file others read), ``service`` (the loop; it drives a writer Library
handed in by the command line). May import ``indexer.ingest`` (walking folders),
``indexer.store`` and ``indexer.config``; never the Library, the CLI or the UI.
"""
