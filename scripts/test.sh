#!/usr/bin/env bash
# Installs dependencies, builds moe.cpp, and runs the whole test suite twice: a release build and an
# AddressSanitizer + UndefinedBehaviorSanitizer build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${MOE_SKIP_DEPS:-0}" != "1" ]; then scripts/install_deps.sh; fi
JOBS=${JOBS:-$(nproc)}
cmake --preset release >/dev/null
cmake --build --preset release -j "$JOBS"
ctest --preset release -j "$JOBS"
cmake --preset asan >/dev/null
cmake --build --preset asan -j "$JOBS"
ctest --preset asan -j "$JOBS"
