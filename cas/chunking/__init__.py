"""Content-defined chunking (FastCDC 2020) for SplitBlob and SpliceBlob."""
