"""Stores that wrap other stores: verify, size_partition, read_cache."""
