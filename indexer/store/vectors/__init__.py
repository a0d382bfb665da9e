"""The FAISS vector index of the SQLite backend (``index``) and its file format (``file``)."""
