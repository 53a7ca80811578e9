"""What the disk and packed engines share: the I/O lane, file helpers, the directory lock."""
