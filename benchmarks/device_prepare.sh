#!/usr/bin/env bash
# Fill device_carry/ (git-ignored) here with what benchmarks/device_check.sh needs on the GPU machine, which reaches
# no package registry: run from anywhere, then carry the folder with the working tree (64 MiB for both together).
#
#   bash benchmarks/device_prepare.sh            # -> device_carry/{wheels,data/fashion-mnist,MANIFEST.txt}
#
# wheels/: keras 3.15.1, the keras dependencies and package dependencies that a Python 3.12 machine with JAX and
#   numpy may lack (cp312 manylinux x86_64 binaries or pure-Python wheels; device_check.sh installs one only where
#   the machine lacks it), and this package built as a wheel. Not carried, for size: matplotlib (~17 MB with its
#   dependencies), scikit-learn (~50 MB with scipy) and pillow; the GPU machine's image has all three
#   (/work/.library/device/KINDS.md), and `mfef train` on Fashion-MNIST needs only matplotlib, for its curves.
# data/fashion-mnist/: the four official IDX files, from Debian's dataset-fashion-mnist (30 MB).
#
# Settings (environment): DEVICE_CARRY (default device_carry), PYTHON (a Python with pip, default .venv/bin/python),
# FASHION_MNIST_DIR (default /usr/share/datasets/fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."

carry=${DEVICE_CARRY:-device_carry}
python=${PYTHON:-.venv/bin/python}
fashion=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
# The working tree travels too (about 4 MB); the device tool refuses more than 64 MiB in all.
limit_mib=58
# The versions this package is tested with (the project's .venv); keras's own pins come first.
wheels=(
  keras==3.15.1 namex==0.1.0 optree==0.20.0 absl-py==2.5.1 rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2
  pygments==2.21.0 h5py==3.14.0 ml-dtypes==0.6.0 packaging==26.4 typing-extensions==4.16.0
  click==8.5.1 pyyaml==6.0.4 tqdm==4.70.1
)
fashion_files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

rm -rf "$carry"
mkdir -p "$carry/wheels" "$carry/data/fashion-mnist"

# pip matches each manylinux tag exactly: list the ones these wheels are published under.
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
"$python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d "$carry/wheels" "${wheels[@]}"

# This package, pure Python (setuptools builds it in build/ and *.egg-info, both git-ignored).
"$python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$carry/wheels" .

for file in "${fashion_files[@]}"; do
  [[ -f $fashion/$file ]] || { echo "missing $fashion/$file: apt-get install dataset-fashion-mnist" >&2; exit 1; }
  cp "$fashion/$file" "$carry/data/fashion-mnist/"
done

{
  # The package wheel is built from the working tree as it is: say which commit, and whether it had changes.
  echo "built from $(git describe --always --dirty 2>/dev/null || echo 'no git') on $(date -u +%Y-%m-%dT%H:%MZ)"
  (cd "$carry" && find . -type f ! -name MANIFEST.txt -printf '%s %p\n' | sort -k2)
} >"$carry/MANIFEST.txt"
total=$(du -sb "$carry" | cut -f1)
echo "device_prepare: $(find "$carry/wheels" -name '*.whl' | wc -l) wheels and ${#fashion_files[@]} data files in $carry," \
  "$((total / 1024 / 1024)) MiB (limit $limit_mib MiB beside the working tree)"
if ((total > limit_mib * 1024 * 1024)); then
  echo "device_prepare: $carry is over $limit_mib MiB; it would not travel with the working tree" >&2
  exit 1
fi
