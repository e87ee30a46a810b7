#!/usr/bin/env bash
# One-command setup (make setup): .venv with the project under pinned torch/torchvision, and the system
# data packages the embedded datasets and format tests read. Safe to re-run; make skips it when the stamp
# is newer than its inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
# faiss: the GPU build where nvidia-smi lists a GPU, else the CPU build (MOCO_BENCH_FAISS=cpu|gpu to choose).
# Both provide the module `faiss`: where the other one is installed, both go (their files overlap) and the
# chosen one is installed afresh.
FAISS=${MOCO_BENCH_FAISS:-auto}
if [ "$FAISS" = auto ]; then
  if nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then FAISS=gpu; else FAISS=cpu; fi
fi
case "$FAISS" in
  cpu) OTHER=faiss-gpu ;;
  gpu) OTHER=faiss-cpu ;;
  *) echo "error: MOCO_BENCH_FAISS=$FAISS: expected cpu, gpu or auto" >&2; exit 1 ;;
esac
if .venv/bin/python -m pip show -q "$OTHER" >/dev/null 2>&1; then
  .venv/bin/python -m pip uninstall -q -y faiss-cpu faiss-gpu
fi
echo "== installing moco-bench and its dependencies (torch/torchvision pinned by constraints.txt; faiss: $FAISS)"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test,$FAISS]"

# Fashion-MNIST (Debian's dataset-fashion-mnist) feeds every embedded dataset; labelme-examples gives
# three real VOC photos for the reader tests. Installed when missing and apt-get is usable.
apt_install() {
  local runner=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then runner="sudo -n"; else return 1; fi
  fi
  command -v apt-get >/dev/null || return 1
  $runner env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
    $runner apt-get update -q >/dev/null 2>&1 && \
    $runner env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; }
}
FMNIST=${MOCO_BENCH_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
if [ ! -e "$FMNIST/train-images-idx3-ubyte.gz" ] && [ ! -e "$FMNIST/train-images-idx3-ubyte" ]; then
  echo "== installing Debian's dataset-fashion-mnist"
  if ! apt_install dataset-fashion-mnist; then
    echo "error: Fashion-MNIST not found at $FMNIST and apt-get could not install dataset-fashion-mnist." >&2
    echo "       Install it (apt-get install dataset-fashion-mnist) or set MOCO_BENCH_FASHION_MNIST to a folder" >&2
    echo "       holding train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-*-ubyte[.gz]." >&2
    exit 1
  fi
fi
if [ ! -d /usr/share/doc/labelme-examples ] && ! dpkg -s labelme-examples >/dev/null 2>&1; then
  apt_install labelme-examples || echo "note: labelme-examples not installed; its VOC reader test will be skipped"
fi
# Debian's chromium renders the HTML report in tests/test_report.py (every plot loaded, no horizontal scroll at
# 1280 px); without it that one test is skipped.
if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing Debian's chromium (report rendering test)"
  apt_install chromium || echo "note: chromium not installed; the report rendering test will be skipped"
fi
# detectron2: official source where reachable, else PyPI's pb1-detectron2 sdist with a small compatibility
# step (README.md, section "detectron2"). A no-op when it is already installed.
.venv/bin/python scripts/install_detectron2.py
# lvis and cityscapesscripts (detectron2's LVIS and Cityscapes evaluations), each with a counted NumPy 2 fix
# (README, "lvis and cityscapesscripts").
.venv/bin/python scripts/install_patched_wheels.py
# deepforest ships aerial images with real VOC-XML tree boxes (deepforest/data/); installed without its
# dependencies and never imported, only read as data by the detection tests.
if ! .venv/bin/python -m pip show -q deepforest >/dev/null 2>&1; then
  echo "== installing deepforest (data only, --no-deps)"
  .venv/bin/python -m pip install -q --no-deps "deepforest==2.1.0"
fi
echo "== setup done"
