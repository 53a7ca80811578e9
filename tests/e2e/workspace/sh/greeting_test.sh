#!/bin/sh
# Checks the genrule chain's output, which reaches this test as a runfile.
set -eu
expected="HELLO FROM A GENRULE"
got=$(cat "$1")
if [ "$got" != "$expected" ]; then
  echo "expected '$expected', got '$got'" >&2
  exit 1
fi
echo "greeting_test passed"
