"""Compression of blob transfers (REv2 ``compressed-blobs``): the codecs, bounded streams
over them, and a small cache of compressed forms for blobs read compressed again and again."""
