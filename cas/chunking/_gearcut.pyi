def cut(
    data: bytes | bytearray | memoryview,
    offset: int,
    available: int,
    min_size: int,
    avg_size: int,
    max_size: int,
    mask_small: int,
    mask_large: int,
    gear: bytes,
    /,
) -> int: ...
