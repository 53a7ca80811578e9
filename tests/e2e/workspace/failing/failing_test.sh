#!/bin/sh
echo "failing_test fails on purpose" >&2
exit 3
