#!/usr/bin/env bash
# Offline data that comes from Debian rather than PyPI: Fashion-MNIST (dataset-fashion-mnist).
# Best effort: needs root and apt; without it ravine's loader says how to install it by hand.
set -u
# Debian installs the IDX files to /usr/share/datasets/fashion-mnist (ravine.data.datasets.FASHION_MNIST_DIRS).
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
    (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) ||
    echo "note: could not install dataset-fashion-mnist; Fashion-MNIST loaders will ask for --data-dir" >&2
fi
exit 0
