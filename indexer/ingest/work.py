"""What an indexing run passes between its steps: the files to do, their results, the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from indexer.ingest.scan import FileEntry


@dataclass
class IndexReport:
    """What a run did (also the ``index --json`` output)."""

    scanned: int = 0
    unchanged: int = 0
    added: int = 0
    updated: int = 0
    touched: int = 0
    moved: int = 0
    copied: int = 0
    errors: int = 0
    removed: int = 0
    encoded: int = 0
    unreachable: int = 0  # engine ray: files a worker could not read (left for the next run)
    seconds: float = 0.0
    images_per_second: float = 0.0
    unlisted_folders: list[str] = field(default_factory=list)
    concepts_lost: list[str] = field(default_factory=list)  # reindex: concepts not refitted

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Work:
    entry: FileEntry
    row_id: int | None
    old_hash: str | None
    old_ok: bool


@dataclass
class _Result:
    work: _Work
    kind: str  # "encode" | "same" | "known" | "error"
    digest: str | None = None
    tensor: object = None
    meta: dict = field(default_factory=dict)
    error: str | None = None
    frames: list | None = None  # a video's sampled frames (``tensor``: one per frame)
