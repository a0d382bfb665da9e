"""Photos and text -> vectors: ``images`` (read, decode, EXIF, thumbnails) and ``encoder``
(the :class:`Encoder` protocol, :class:`ClipEncoder`, thread plans). Used by ingest, search,
tags and the UI. May import ``indexer.config``, ``indexer.types`` and ``clipmodel``."""
