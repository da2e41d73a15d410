#!/usr/bin/env bash
# Installs every build and test dependency of moe.cpp from Debian 12's packages.
# Usage: sudo scripts/install_deps.sh   (or as root)
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  g++ cmake ninja-build make pkg-config git ca-certificates \
  nlohmann-json3-dev libcli11-dev \
  libgtest-dev libgmock-dev libbenchmark-dev \
  libopenblas-dev libpcre2-dev libutf8proc-dev nodejs npm \
  python3 python3-numpy >/dev/null
echo "install_deps: done"
