#!/usr/bin/env bash
# Install Fashion-MNIST (Debian package dataset-fashion-mnist, MIT licence) when it is missing.
set -euo pipefail
DIR=/usr/share/datasets/fashion-mnist
[ -f "$DIR/t10k-labels-idx1-ubyte.gz" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if command -v apt-get >/dev/null && { [ -z "$SUDO" ] || sudo -n true 2>/dev/null; }; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist
  exit 0
fi
cat >&2 <<MSG
Fashion-MNIST is missing from $DIR and cannot be installed automatically here.
Install it with:   sudo apt-get install dataset-fashion-mnist
or put the four official idx .gz files in a folder and set DYN_PERCEPTION_FMNIST_DIR to it.
MSG
exit 1
