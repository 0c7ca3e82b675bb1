#!/usr/bin/env bash
# The speed issue's GPU figures, prepared so that a session lent a device spends its few minutes measuring.
#
# Here, before the call (on the CPU machine):
#   python benchmarks/pack_cave.py --out runs/cave256_u16            # 33 MiB of uint16 crops (cave256-x4)
#   mkdir -p runs/srf && cp ../shared/data/srf/nikon_d700.csv runs/srf/
# Then one device call per part, each well inside the 10-minute limit of a call
# (carry: runs/cave256_u16 and runs/srf; the device has PyTorch and every dependency but colour-science,
# which these parts do not import):
#   bash benchmarks/gpu_checks.sh bench     # csakd bench: student, teacher, lite; eager fp32 and bf16 channels-last,
#                                           # batch 1 and 16, one co-training step (about 3 minutes)
#   bash benchmarks/gpu_checks.sh quality   # cave256-x4, the paper's widths, 8 minutes of co-training, then eval of
#                                           # teacher and student on the held-out scenes (about 9 minutes)
#   bash benchmarks/gpu_checks.sh tiled     # 4096x4096x172 through the student in tiles: peak RSS and time (needs
#                                           # ../shared/data/abu_aviris carried as runs/abu_aviris; about 2 minutes)
# Every JSON lands in $OUT (the device tool brings back 8 files); the log in $OUT/gpu_checks.log.
set -euo pipefail
part=${1:?usage: gpu_checks.sh bench|quality|tiled}
out=${OUT:?set OUT to the folder for the results}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
exec > >(tee -a "$out/gpu_checks.log") 2>&1
case "$part" in
  bench)
    for preset in student teacher lite; do
      python3 -m csakd bench --preset "$preset" --device cuda --bands 172 --msi-bands 4 --size 256 \
        --batches 1,16 --train-step --json "$out/bench_${preset}_gpu.json"
    done
    ;;
  quality)
    for needed in runs/cave256_u16 runs/srf/nikon_d700.csv; do
      [ -e "$needed" ] || { echo "gpu_checks: $needed not carried (see the top of this script)"; exit 2; }
    done
    python3 benchmarks/cave_run.py --cave runs/cave256_u16 --srf runs/srf/nikon_d700.csv --widths paper \
      --device cuda --minutes 8 --crop 128 --out /tmp/cave_gpu --json "$out/cave_gpu_x4.json"
    ;;
  tiled)
    [ -d runs/abu_aviris ] || { echo "gpu_checks: runs/abu_aviris not carried"; exit 2; }
    python3 benchmarks/tiled_memory.py --size 4096 --preset student --tile 1024 --batch-tiles 4 --device cuda \
      --aviris runs/abu_aviris --work /tmp/tiled4096 --json "$out/tiled_memory_4096_student_gpu.json"
    ;;
  *)
    echo "gpu_checks: unknown part '$part': expected bench, quality or tiled"; exit 2
    ;;
esac
