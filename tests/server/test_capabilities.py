"""Capabilities tell the truth about what the storage services serve."""

from __future__ import annotations

import grpc
import pytest

from cas.config import ConfigError
from cas.digest import ALGORITHMS
from remote_apis_protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from server.config import parse_config
from tests.server.client import StorageClient, expect_error


async def test_capabilities_describe_the_cache(client: StorageClient) -> None:
    caps = await client.capabilities.GetCapabilities(re_pb2.GetCapabilitiesRequest(instance_name="any/name"))
    assert (caps.low_api_version.major, caps.low_api_version.minor) == (2, 0)
    assert (caps.high_api_version.major, caps.high_api_version.minor) >= (2, 0)
    cache = caps.cache_capabilities
    assert set(cache.digest_functions) == set(ALGORITHMS)
    assert re_pb2.DigestFunction.BLAKE3 in cache.digest_functions
    assert cache.max_batch_total_size_bytes >= 4 << 20
    assert cache.action_cache_update_capabilities.update_enabled
    # Exactly what is served (identity is implied), on ByteStream and in batches alike.
    served = [re_pb2.Compressor.ZSTD, re_pb2.Compressor.DEFLATE]
    assert list(cache.supported_compressors) == served and list(cache.supported_batch_update_compressors) == served
    assert cache.split_blob_support and cache.splice_blob_support
    assert (cache.fast_cdc_2020_params.avg_chunk_size_bytes, cache.fast_cdc_2020_params.seed) == (512 << 10, 0)


async def test_update_capability_follows_the_instance_config(named_client: StorageClient) -> None:
    ro = await named_client.capabilities.GetCapabilities(re_pb2.GetCapabilitiesRequest(instance_name="team/ro"))
    main = await named_client.capabilities.GetCapabilities(re_pb2.GetCapabilitiesRequest(instance_name="main"))
    assert not ro.cache_capabilities.action_cache_update_capabilities.update_enabled
    assert main.cache_capabilities.action_cache_update_capabilities.update_enabled
    message = await expect_error(
        named_client.capabilities.GetCapabilities(re_pb2.GetCapabilitiesRequest(instance_name="x")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "'x'" in message


def test_a_batch_limit_below_4mib_is_a_config_error() -> None:
    data = {"stores": {"m": {"type": "memory"}}, "instances": [{"name": "", "cas": "m", "ac": "m"}]}
    assert parse_config({**data, "server": {"max_batch_total_size_bytes": "8MiB"}}).max_batch_total_size_bytes == 8 << 20
    with pytest.raises(ConfigError, match="below the 4MiB"):
        parse_config({**data, "server": {"max_batch_total_size_bytes": "1MiB"}})
