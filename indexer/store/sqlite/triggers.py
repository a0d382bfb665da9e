"""The SQL of the schema's triggers and virtual tables (kept apart from the table classes)."""

# FTS5 over ocr_text.compact (external content: the text is stored once), kept by triggers.
_OCR_FTS = "CREATE VIRTUAL TABLE ocr_fts USING fts5(compact, content='ocr_text', content_rowid='image_id', tokenize='trigram')"  # fmt: skip
_FTS_ADD = "INSERT INTO ocr_fts(rowid, compact) VALUES (NEW.image_id, NEW.compact);"
_FTS_SUB = (
    "INSERT INTO ocr_fts(ocr_fts, rowid, compact) VALUES ('delete', OLD.image_id, OLD.compact);"
)
_OCR_TRIGGERS = {
    "ocr_fts_insert": f"AFTER INSERT ON ocr_text BEGIN {_FTS_ADD} END",
    "ocr_fts_delete": f"AFTER DELETE ON ocr_text BEGIN {_FTS_SUB} END",
    "ocr_fts_update": f"AFTER UPDATE ON ocr_text BEGIN {_FTS_SUB} {_FTS_ADD} END",
}

_COUNT_ADD = (
    "INSERT INTO image_counts(root, status, n) VALUES (NEW.root, NEW.status, 1) "
    "ON CONFLICT(root, status) DO UPDATE SET n = n + 1;"
)
_COUNT_SUB = "UPDATE image_counts SET n = n - 1 WHERE root = OLD.root AND status = OLD.status;"
_VEC = "INSERT INTO counters(name, n) VALUES ('vectors', {d}) ON CONFLICT(name) DO UPDATE SET n = n + {d};"
_TRIGGERS = {
    "images_count_insert": f"AFTER INSERT ON images BEGIN {_COUNT_ADD} END",
    "images_count_delete": f"AFTER DELETE ON images BEGIN {_COUNT_SUB} END",
    "images_count_update": "AFTER UPDATE OF root, status ON images WHEN OLD.root IS NOT NEW.root "
    f"OR OLD.status IS NOT NEW.status BEGIN {_COUNT_SUB} {_COUNT_ADD} END",
    "vectors_count_insert": f"AFTER INSERT ON vectors BEGIN {_VEC.format(d=1)} END",
    "vectors_count_delete": f"AFTER DELETE ON vectors BEGIN {_VEC.format(d=-1)} END",
}
