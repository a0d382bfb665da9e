"""clipsearch indexer: scanning, encoding, storage and search of the photo library."""
