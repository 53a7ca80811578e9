#!/bin/sh
# Runs as three shards; each must see its index and acknowledge sharding.
set -eu
: "${TEST_TOTAL_SHARDS:?not sharded}"
: "${TEST_SHARD_INDEX:?no shard index}"
if [ -n "${TEST_SHARD_STATUS_FILE:-}" ]; then touch "$TEST_SHARD_STATUS_FILE"; fi
echo "shard $TEST_SHARD_INDEX of $TEST_TOTAL_SHARDS passed"
