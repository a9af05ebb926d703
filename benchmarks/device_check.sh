#!/usr/bin/env bash
# The GPU measurement, prepared (issue 15): run on the GPU machine, from the repository root, with the folder that
# benchmarks/device_prepare.sh filled here carried along:
#
#   bash benchmarks/device_check.sh              # the machine's python3 (JAX with CUDA, numpy); < 8 minutes
#   bash benchmarks/device_check.sh --cpu-smoke  # tiny sizes, any JAX (a CPU rehearsal of the whole script)
#
# 1. installs the carried wheels --no-deps into a folder on PYTHONPATH: keras 3.15.1 and this package always,
#    keras's small dependencies only where the machine lacks them (its own JAX, numpy, ml-dtypes... stay);
# 2. prints the versions and the JAX devices;
# 3. measures the MFEF step of 2 x resnet32 on CIFAR-100 shapes, batch 128 and 512, float32 and mixed_bfloat16,
#    each in a fresh process: img/s, step-time p50, peak device memory, and the numpy input pipeline's img/s
#    beside the step's (does the host keep the GPU fed?);
# 4. trains Fashion-MNIST resnet20 MFEF (KERAS_BACKEND=jax mfef train, data carried) for as many epochs as the
#    step figures say fit in the time left: seconds per epoch and test top-1;
# 5. prints one markdown table and writes it to $OUT/device_check.md (the log beside it).
#
# Settings (environment): DEVICE_CHECK_SECONDS (total budget, default 450: a hard guard, every part runs under
# `timeout` with what is left), DEVICE_CARRY (default device_carry), PYTHON (default python3), OUT (default
# ./device_check_out), DEVICE_CHECK_EPOCHS (training epochs instead of the plan).
#
# Why a PYTHONPATH folder and not a virtualenv: on the GPU machine python3 is itself a virtualenv
# (/opt/torch/.venv), and a virtualenv made from it with --system-site-packages sees the base interpreter's
# packages, not that one's JAX; `pip install --target` beside the machine's own packages reuses them as they are.
set -uo pipefail # no -e: a part that fails is reported in the table and the rest still runs
cd "$(dirname "$0")/.."

started=$SECONDS
budget=${DEVICE_CHECK_SECONDS:-450}
carry=${DEVICE_CARRY:-device_carry}
python=${PYTHON:-python3}
out=${OUT:-$PWD/device_check_out}
smoke=0
[[ ${1:-} == --cpu-smoke ]] && smoke=1

if ((smoke)); then
  step_backbone=resnet8 batches=(16 32) steps=3 train_backbone=resnet8 max_epochs=2
  train_extra=(--train-limit 512) train_images=512
else
  step_backbone=resnet32 batches=(128 512) steps=20 train_backbone=resnet20 max_epochs=30
  train_extra=() train_images=55000
fi
precisions=(float32 mixed_bfloat16)

work=$(mktemp -d /tmp/mfef-device-check.XXXXXX)
results=$work/results
mkdir -p "$results" "$out"
log=$out/device_check.log
: >"$log"

say() { echo "[device_check $((SECONDS - started)) s] $*" | tee -a "$log"; }
left() { echo $((budget - (SECONDS - started))); }
# A result line for a part that gave none (failed, timed out, skipped), so the table still shows the row.
error_result() { printf 'RESULT {"kind": "%s", %s "error": "%s"}\n' "$1" "$2" "$3"; }
last_error() { grep -v '^RESULT ' "$1" | grep -v '^\s*$' | tail -n 1 | tr -d '"\\' | cut -c1-160; }

# ---------------------------------------------------------------- 1. install
site=$work/site
install_carried_wheels() {
  local wheel name wanted=()
  for wheel in "$carry"/wheels/*.whl; do
    [[ -e $wheel ]] || { say "no wheels in $carry/wheels: run benchmarks/device_prepare.sh first and carry $carry"; return 1; }
    name=$(basename "$wheel" | cut -d- -f1)
    case $name in
    keras | mfef_keras) wanted+=("$wheel") ;; # always ours: the versions the package was tested with
    *)
      if "$python" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$name" 2>/dev/null; then
        say "keeping the machine's $name $("$python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")"
      else
        wanted+=("$wheel")
      fi
      ;;
    esac
  done
  say "installing --no-deps: ${wanted[*]##*/}"
  # --ignore-requires-python: harmless once the package declares 3.12; the wheels are cp312 or pure Python.
  timeout 120 "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --ignore-requires-python \
    --disable-pip-version-check --target "$site" "${wanted[@]}" 2>&1 | tee -a "$log"
}
install_carried_wheels || { say "install failed"; exit 1; }
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 KERAS_HOME=$work/keras_home
# Keep the GPU's memory free for measuring; JAX would otherwise take 75 % of it at start.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

# ------------------------------------------------------------- 2. versions
"$python" benchmarks/device_check.py env >"$results/00-env.log" 2>&1 || true
grep '^RESULT ' "$results/00-env.log" | tee -a "$log" || { say "environment failed:"; tail -n 20 "$results/00-env.log" | tee -a "$log"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee -a "$log" || true

# ------------------------------------------------------------- 3. the step
# The training run keeps at least 45 % of the budget (its first epoch compiles too).
train_reserve=$((budget * 45 / 100))
index=10
for batch in "${batches[@]}"; do
  for precision in "${precisions[@]}"; do
    file=$results/$index-step-$batch-$precision.log
    index=$((index + 1))
    setting="\"backbone\": \"$step_backbone\", \"batch_size\": $batch, \"precision\": \"$precision\","
    allowed=$(($(left) - train_reserve))
    if ((allowed < 30)); then
      error_result step "$setting" "skipped: time budget" >"$file"
      say "step $batch $precision skipped (time)"
      continue
    fi
    say "step: 2 x $step_backbone, batch $batch, $precision (at most $((allowed < 180 ? allowed : 180)) s)"
    timeout $((allowed < 180 ? allowed : 180)) "$python" benchmarks/device_check.py step \
      --backbone "$step_backbone" --batch-size "$batch" --precision "$precision" --steps "$steps" >"$file" 2>&1
    status=$?
    if ! grep -q '^RESULT ' "$file"; then
      reason=$( ((status == 124)) && echo "timed out" || echo "failed (exit $status): $(last_error "$file")")
      tail -n 15 "$file" >>"$log"
      error_result step "$setting" "$reason" >>"$file"
    fi
    grep '^RESULT ' "$file" | tee -a "$log"
  done
done

# ----------------------------------------------------------- 4. training
run_dir=$work/fashion-mnist-run
train_file=$results/40-train.log
if [[ -n ${DEVICE_CHECK_EPOCHS:-} ]]; then
  epochs=$DEVICE_CHECK_EPOCHS
else
  "$python" benchmarks/device_check.py plan --results "$results" --seconds $(($(left) - 30)) \
    --max-epochs "$max_epochs" --train-images "$train_images" >"$results/30-plan.log" 2>&1
  cat "$results/30-plan.log" >>"$log"
  epochs=$(grep '^RESULT ' "$results/30-plan.log" | "$python" -c \
    'import json, sys; print(json.loads(sys.stdin.read()[len("RESULT "):])["epochs"])' 2>/dev/null || echo 1)
fi
if ((epochs < 1)); then
  error_result train '"epochs": 0,' "skipped: no epoch fits in the $(left) s left" >"$train_file"
else
  guard=$(($(left) - 25))
  say "training: KERAS_BACKEND=jax mfef train, fashion_mnist, 2 x $train_backbone, $epochs epochs (guard $guard s)"
  # SIGINT first, so a run stopped by the guard keeps the epochs it finished (metrics.csv is written per epoch).
  # The installed console script: `python -m mfef_keras.cli` here would import the source tree, not the wheel.
  timeout --signal=INT --kill-after=15 "$guard" "$site/bin/mfef" train --dataset fashion_mnist \
    --backbone "$train_backbone" --method mfef --epochs "$epochs" --batch-size 128 --seed 0 \
    --data-dir "$carry/data" --run-dir "$run_dir" --no-progress "${train_extra[@]}" >"$work/train.out" 2>&1
  status=$?
  tail -n 25 "$work/train.out" >>"$log"
  "$python" benchmarks/device_check.py train-report --run-dir "$run_dir" --planned-epochs "$epochs" >"$train_file" 2>&1
  if ((status != 0)); then
    reason=$( ((status == 124)) && echo "stopped by the time guard" || echo "exit $status: $(last_error "$work/train.out")")
    # The report of the epochs it completed stays; a note says why the run ended early.
    "$python" - "$train_file" "$reason" <<'EOF'
import json, sys
path, reason = sys.argv[1:]
lines = open(path).read().splitlines()
results = [json.loads(l[len("RESULT "):]) for l in lines if l.startswith("RESULT ")] or [{"kind": "train", "epochs": 0}]
results[-1]["error"] = reason
open(path, "w").write("RESULT " + json.dumps(results[-1]) + "\n")
EOF
  fi
  grep '^RESULT ' "$train_file" | tee -a "$log"
fi

# --------------------------------------------------------------- 5. table
title="GPU check, $(date -u +%Y-%m-%d), $((SECONDS - started)) s of a $budget s budget$( ((smoke)) && echo ', CPU smoke sizes')"
"$python" benchmarks/device_check.py table --results "$results" --train-backbone "$train_backbone" \
  --title "$title" >"$out/device_check.md" 2>>"$log"
echo | tee -a "$log"
cat "$out/device_check.md" | tee -a "$log"
rm -rf "$work"
