"""Tag embeddings, cached by (model, tag, ensemble texts) in memory and on disk."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from indexer.tags.scoring import tag_embeddings
from indexer.tags.vocabulary import Vocabulary

EmbedTexts = Callable[[list[str]], np.ndarray]


class EmbeddingCache:
    """Tag embeddings by (model, tag, ensemble texts): text is encoded once per definition.

    With ``directory``, embeddings also persist there (one ``.npy`` per key, written
    atomically), so each ``index`` run does not re-encode the whole vocabulary.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self._cache: dict[tuple, np.ndarray] = {}
        self.texts_encoded = 0
        self.directory = directory

    def _file(self, key: tuple) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / (hashlib.sha256(repr(key).encode()).hexdigest() + ".npy")

    def _load(self, key: tuple) -> bool:
        path = self._file(key)
        if path is None or not path.exists():
            return False
        try:
            self._cache[key] = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return False
        return True

    def _save(self, key: tuple, emb: np.ndarray) -> None:
        path = self._file(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, np.asarray(emb, dtype=np.float32), allow_pickle=False)
            os.replace(tmp, path)
        except OSError:
            pass  # a cache: failing to write it only costs re-encoding next time

    def get(
        self, vocab: Vocabulary, embed: EmbedTexts, names: Iterable[str], model: str = ""
    ) -> dict[str, np.ndarray]:
        specs = [vocab.tags[n] for n in dict.fromkeys(names)]
        key = {s.name: (model, s.name, tuple(vocab.texts_for(s))) for s in specs}
        missing = [
            s.name for s in specs if key[s.name] not in self._cache and not self._load(key[s.name])
        ]
        if missing:

            def counted(texts: list[str]) -> np.ndarray:
                self.texts_encoded += len(texts)
                return embed(texts)

            for name, emb in tag_embeddings(vocab, counted, tags=missing).items():
                self._cache[key[name]] = emb
                self._save(key[name], emb)
        return {s.name: self._cache[key[s.name]] for s in specs}
