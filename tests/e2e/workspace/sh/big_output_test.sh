#!/bin/sh
# Prints 1,500,000 bytes (30,000 lines of 50) and passes.
set -eu
line=$(printf '%049d' 0)
i=0
while [ $i -lt 30000 ]; do
  echo "$line"
  i=$((i + 1))
done
