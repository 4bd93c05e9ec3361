# One call: correctness, loader, flagship, then the full series with what time is left.
source .gpu/setup.sh || exit 1
set -o pipefail
L=$OUT/log.txt
exec > >(tee -a $L) 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch;print(torch.__version__, torch.version.cuda)"
echo "== gpu tests $(date +%T) t=$SECONDS"
timeout 130 python3 -m pytest -q -x -m gpu -p no:cacheprovider 2>&1 | tail -25
echo "== input-bench t=$SECONDS"
for b in 128 512; do timeout 75 python3 -m cifarkit input-bench --dataset folder:$CIFAR_JPEG --device cuda --batch-size $b --json | tail -1 | tee -a $OUT/bench.jsonl; done
echo "== flagship t=$SECONDS"
for s in 0 1 2 3; do timeout 50 python3 -m cifarkit speedrun --dataset folder:$CIFAR_JPEG --recipe flagship --device cuda --amp bf16 --seed $s --json --out /tmp/sr | tail -1 | tee -a $OUT/flagship.jsonl; done
left=$((585 - SECONDS))
echo "== series t=$SECONDS, limit ${left}s"
timeout -s INT $left python3 -m cifarkit series --dataset folder:$CIFAR_JPEG --profile full --device cuda --goal 300 --out gpu-full 2>&1 | grep -vE '^\s*$' | tail -60
tar czf $OUT/gpu-full.tgz --exclude='*.pt' --exclude='*.onnx' --exclude='*.ipynb' --exclude='*.html' --exclude=perf --exclude=tensorboard gpu-full
echo "== done t=$SECONDS"
