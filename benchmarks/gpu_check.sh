#!/usr/bin/env bash
# GPU numbers in one prepared run (issue 15). Runs the parts of benchmarks/gpu_check.py (cuda_tests:
# benchmarks/gpu_check_tests.py), each under its own timeout, and always ends with OUT_DIR/summary.md and
# OUT_DIR/status.csv (part, status, exit code, seconds):
#
#   bash benchmarks/gpu_check.sh [--device cuda|cpu] [--quick] OUT_DIR
#
# Parts and their CSVs: maps (maps.csv, memory.csv), peers (peers.csv), extraction (extraction.csv: the ImageNet
# sample, or 16 demo photos with --quick; with GPU_CHECK_SCALE_ROOT set, also extraction_scale of that tree's
# train part), cuda_tests (cuda_tests.csv). --quick on the CPU runs torch on one thread (OMP_NUM_THREADS=1):
# on a shared 2-core machine two threads that wait for each other's core made a small forward pass 30x slower.
# Logs and the workflow run go to OUT_DIR/logs and OUT_DIR/work. Installs nothing; environment:
#   PYTHON                   the interpreter (default: .venv/bin/python of the repository, else python3)
#   GPU_CHECK_IMAGENET_ROOT  the ImageNet sample (default: ../shared/data/imagenet_loc, else shared/data/...)
#   GPU_CHECK_SCALE_ROOT     a generated ImageNet tree (benchmarks/make_scale_tree.py), extracted too if set
#   GPU_CHECK_TIMEOUT_<PART> seconds for a part (MAPS, PEERS, EXTRACTION, EXTRACTION_SCALE, CUDA_TESTS)
#   GPU_CHECK_PARTS          the parts to run (default: "maps peers extraction cuda_tests")
# Default timeouts sum to 460 s on CUDA (530 s at worst with the 10 s kill grace and the 30 s summary: under
# a 540 s limit) and 210 s with --quick (which takes about 95 s on 2 shared cores).
set -u

usage() { echo "usage: bash benchmarks/gpu_check.sh [--device cuda|cpu] [--quick] OUT_DIR" >&2; exit 2; }

device=cuda quick=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) [ $# -ge 2 ] || usage; device=$2; shift 2 ;;
        --quick) quick=--quick; shift ;;
        -h|--help) usage ;;
        -*) echo "gpu_check.sh: unknown option $1" >&2; usage ;;
        *) [ -z "${out:-}" ] || usage; out=$1; shift ;;
    esac
done
[ -n "${out:-}" ] || usage
case "$device" in cuda|cpu) ;; *) echo "gpu_check.sh: --device must be cuda or cpu, got $device" >&2; exit 2 ;; esac

repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then PYTHON=$repo/.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out/logs" && out=$(cd "$out" && pwd) || exit 1
rm -f "$out"/*.csv "$out"/summary.md
check=("$PYTHON" "$repo/benchmarks/gpu_check.py")

imagenet=${GPU_CHECK_IMAGENET_ROOT:-}
if [ -z "$imagenet" ]; then
    imagenet=$repo/../shared/data/imagenet_loc
    [ -d "$imagenet" ] || imagenet=$repo/shared/data/imagenet_loc
fi
if [ -n "$quick" ]; then
    t_maps=45 t_peers=45 t_extraction=75 t_cuda=45 limit=(--limit 8) source=(--demo 16 --dataset "demo photos")
    [ "$device" = cpu ] && export OMP_NUM_THREADS=1
else
    t_maps=170 t_peers=100 t_extraction=120 t_cuda=70 limit=() source=(--root "$imagenet")
fi
if [ "$device" = cuda ]; then
    extraction=(--amp bf16 --workers 8 --batch-size 64)
else
    extraction=(--amp none --workers 0 --batch-size 4)
fi

echo "part,status,exit_code,seconds,timeout_s" > "$out/status.csv"
parts=" ${GPU_CHECK_PARTS:-maps peers extraction cuda_tests} "

# run_part NAME TIMEOUT_S COMMAND...: the command under `timeout`, its output in logs/NAME.log, a status row.
run_part() {
    local name=$1 limit=$2 start end code status
    shift 2
    case "$parts" in *" ${name%_scale} "*) ;; *) return ;; esac
    echo "gpu_check: $name (timeout ${limit} s)"
    start=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$@" > "$out/logs/$name.log" 2>&1
    code=$?
    end=$(date +%s%N)
    case $code in
        0) status=pass ;;
        124|137) status=timeout ;;
        *) status=fail ;;
    esac
    printf '%s,%s,%s,%d.%d,%s\n' "$name" "$status" "$code" $(((end - start) / 1000000000)) \
        $(((end - start) / 100000000 % 10)) "$limit" >> "$out/status.csv"
    echo "gpu_check: $name $status (exit $code)"
}

run_part maps "${GPU_CHECK_TIMEOUT_MAPS:-$t_maps}" "${check[@]}" maps --device "$device" $quick \
    --out "$out/maps.csv" --memory "$out/memory.csv"
run_part peers "${GPU_CHECK_TIMEOUT_PEERS:-$t_peers}" "${check[@]}" peers --device "$device" $quick \
    --out "$out/peers.csv"
run_part extraction "${GPU_CHECK_TIMEOUT_EXTRACTION:-$t_extraction}" "${check[@]}" extraction --device "$device" \
    $quick "${source[@]}" "${extraction[@]}" --work "$out/work/sample" --out "$out/extraction.csv"
if [ -n "${GPU_CHECK_SCALE_ROOT:-}" ]; then
    run_part extraction_scale "${GPU_CHECK_TIMEOUT_EXTRACTION_SCALE:-$t_extraction}" "${check[@]}" extraction \
        --device "$device" $quick --root "$GPU_CHECK_SCALE_ROOT" --part train --dataset "scale tree" "${limit[@]}" \
        "${extraction[@]}" --work "$out/work/scale" --out "$out/extraction.csv"
fi
run_part cuda_tests "${GPU_CHECK_TIMEOUT_CUDA_TESTS:-$t_cuda}" "$PYTHON" "$repo/benchmarks/gpu_check_tests.py" \
    --out "$out/cuda_tests.csv" --junit "$out/logs/cuda_tests.xml"

if ! timeout 30 "${check[@]}" summary "$out" --device "$device" > "$out/logs/summary.log" 2>&1; then
    { echo "# GPU check"; echo; echo "The summary step failed (logs/summary.log); the parts' status:"; echo
      sed 's/^/    /' "$out/status.csv"; } > "$out/summary.md"
fi
for log in "$out"/logs/*.log; do
    name=$(basename "$log" .log)
    if grep -q "^$name,\(fail\|timeout\)," "$out/status.csv"; then
        { echo; echo "## Last lines of logs/$name.log"; echo; tail -n 25 "$log" | sed 's/^/    /'; } >> "$out/summary.md"
    fi
done
echo "gpu_check: wrote $out/summary.md"
cat "$out/status.csv"
