#!/usr/bin/env bash
# The ImageNet workflow on a scale tree, locally and/or through the local SLURM of tests/slurm/, from one commit,
# then the per-stage table and whether the two runs' tables are identical (docs/SCALE.md).
#
#   benchmarks/scale_runs.sh N OUT [local|slurm|both|compare] [COMMIT]
#
# OUT/treeN is made by make_scale_tree.py if absent; OUT/<mode>N is a copy of the repository at COMMIT
# (default HEAD, recorded in its COMMIT file) whose data/imagenet is the tree, with 8 extraction shards (the
# config layered from scale.yaml). Targets: the CorLoc table and the example figure (the seed study's cost was
# measured separately: it is five fits and evaluations). Needs the project's .venv; SLURM needs root and the
# Debian packages of tests/slurm/start_slurm.sh. `compare` only diffs two finished runs.
set -euo pipefail

n=${1:?N images}; out=${2:?output folder}; mode=${3:-both}; commit=${4:-HEAD}
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="$repo/.venv/bin/python"
targets=(results/imagenet_corloc.md results/imagenet/examples.png)
tree="$out/tree$n"

make_tree() {
    [[ -f "$tree/LOC_train_solution.csv" ]] && return
    PYTHONPATH="$repo" "$python" "$repo/benchmarks/make_scale_tree.py" "$n" "$tree" --seed 0 --workers 2
}

make_project() {  # make_project NAME: a copy of the repository at $commit reading the tree
    local dir="$out/$1$n"
    rm -rf "$dir" && mkdir -p "$dir"
    git -C "$repo" archive "$commit" | tar -x -C "$dir"
    git -C "$repo" rev-parse "$commit" > "$dir/COMMIT"
    rm -rf "$dir/data/imagenet" && ln -s "$(cd "$tree" && pwd)" "$dir/data/imagenet"
    cat > "$dir/scale.yaml" <<EOF
targets: [imagenet]
datasets:
  imagenet: {kind: imagenet, root: data/imagenet, parts: [train]}
extraction: {shards: 8}
EOF
    echo "$dir"
}

run() {  # run NAME SNAKEMAKE-ARGS...: the workflow in a fresh project copy, timed
    local name=$1; shift
    local dir; dir=$(make_project "$name")
    (cd "$dir" && PYTHONPATH="$dir" /usr/bin/time -v "$python" -m snakemake "${targets[@]}" --configfile scale.yaml "$@" \
        > run.log 2>&1) || { echo "scale_runs: the $name run failed, see $dir/run.log" >&2; return 1; }
    echo "scale_runs: $name run finished in $dir"
}

compare() {  # identical tables, fit summary, box model and predictions (paths aside)
    local a="$out/local$n" b="$out/slurm$n" same=0
    for f in results/imagenet_corloc.csv results/imagenet_corloc.md results/imagenet/fit_summary.json \
             results/imagenet/split.csv results/imagenet_predictions.csv; do
        if diff -q <(sed "s|$a|<dir>|g" "$a/$f") <(sed "s|$b|<dir>|g" "$b/$f") > /dev/null; then
            echo "identical: $f"
        else
            echo "DIFFERENT: $f"; same=1
        fi
    done
    cmp -s "$a/results/imagenet/regressor.npz" "$b/results/imagenet/regressor.npz" \
        && echo "identical: results/imagenet/regressor.npz" || { echo "DIFFERENT: regressor.npz"; same=1; }
    "$python" "$repo/benchmarks/stage_table.py" imagenet "$a" "$b" --images "$n" "$n"
    return $same
}

case "$mode" in
    local|both|slurm) make_tree ;;
esac
case "$mode" in
    local) run local --cores 2 ;;
    slurm)
        eval "$("$repo/tests/slurm/start_slurm.sh")"
        run slurm --profile workflow/profiles/slurm --slurm-init-seconds-before-status-checks 5 \
            --seconds-between-status-checks 10 ;;
    both) "$0" "$n" "$out" local "$commit" && "$0" "$n" "$out" slurm "$commit" && compare ;;
    compare) compare ;;
    *) echo "scale_runs: mode must be local, slurm, both or compare" >&2; exit 2 ;;
esac
