#!/usr/bin/env bash
# Builds a PSML model zoo as a `moat serve` repository, reproducibly (fixed seeds, fixed
# training subsets). The victim zoo trains on the FIRST `TRAIN` training samples only; the
# attacker's public pool (`moat attack psml --pool-offset`) starts after them, so the two are
# disjoint.
#
#   deploy/zoo/build-zoo.sh cifar10 DATA_DIR OUT_REPO     # 8 CIFAR-10 models (minutes each, 2 cores)
#   deploy/zoo/build-zoo.sh mnist   DATA_DIR OUT_REPO     # 6 MNIST models (seconds each)
#   deploy/zoo/build-zoo.sh digits  -        OUT_REPO     # 6 models on the embedded UCI digits
#
# digits has no official split: every digits member trains on split seed 1 (`--seed 1`; the
# architectures differ) and on its first 700 training samples, so the attacker's pool
# (`--pool-offset 700`: the other 737) and the test split of seed 1 (360, `moat attack psml
# --split-seed 1`) are held out from every member.
#
# MOAT (default: moat on PATH) is the binary to use. Each model lands in
# OUT_REPO/<slug>/1/model.onnx with its card, and OUT_REPO/<slug>/config.json names the task.
set -euo pipefail
dataset=${1:?dataset: cifar10, mnist or digits}
data_dir=${2:?data dir (- for digits)}
out=${3:?output repository}
moat=${MOAT:-moat}

case "$dataset" in
  cifar10)
    train=20000; test=5000
    zoo=("mlp:128 3" "mlp:256,128 3" "mlp:512,256 3" "lenet5:x0.5 3" "lenet5 3" "lenet5:x2 3" "resnet20:x0.25 2" "resnet20:x0.5 2") ;;
  mnist)
    train=20000; test=5000
    zoo=("mlp:16 2" "mlp:64 2" "mlp:256,64 2" "lenet5:x0.5 1" "lenet5 1" "lenet5:x2 1") ;;
  digits)
    train=700; test=0
    zoo=("mlp:8 30" "mlp:16 30" "mlp:32 30" "mlp:64 30" "mlp:64,32 30" "mlp:128,64 30") ;;
  *) echo "unknown dataset '$dataset' (cifar10, mnist or digits)" >&2; exit 2 ;;
esac

mkdir -p "$out"
seed=1
for entry in "${zoo[@]}"; do
  read -r arch epochs <<<"$entry"
  slug=$(echo "$arch" | tr ':,' '-_')
  dir="$out/$slug"
  if [ -e "$dir/1/model.onnx" ]; then echo "have $slug"; seed=$((seed + 1)); continue; fi
  mkdir -p "$dir/1"
  model_seed=$seed
  if [ "$dataset" = digits ]; then model_seed=1; fi # one split for the whole digits zoo
  args=(train --arch "$arch" --dataset "$dataset" --epochs "$epochs" --seed "$model_seed" --quiet -o "$dir/1/model.onnx")
  if [ "$dataset" != digits ]; then
    args+=(--data-dir "$data_dir" --train-limit "$train" --test-limit "$test")
  else
    args+=(--train-limit "$train")
  fi
  echo "training $slug ($epochs epochs, seed $model_seed)"
  "$moat" "${args[@]}"
  printf '{ "task": "%s" }\n' "$dataset" >"$dir/config.json"
  seed=$((seed + 1))
done
echo "zoo of ${#zoo[@]} models in $out"
