#!/usr/bin/env bash
# Runs every compiled test file with Node's test runner (npm test builds first).
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(find dist/test dist/src -name '*.test.js' 2>/dev/null | sort)
# Each test's bound on a hang: 10 minutes (tests on a busy machine take several times as long as
# on an idle one; a per-test timeout of a minute or two failed them there).
exec node --test --test-concurrency=1 --test-timeout=600000 "${files[@]}"
