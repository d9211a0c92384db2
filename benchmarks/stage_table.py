"""One Markdown table of the workflow's per-stage benchmark files for one or more runs of one dataset.

Reads ``<project>/results/benchmarks/<dataset>/**/*.tsv`` (Snakemake ``benchmark:`` files: wall ``s``,
``cpu_time``, ``max_rss`` in MB, ``io_out`` in MB written) of each project folder; sharded stages (extract)
are summed (wall, CPU, MB written) with the largest RSS. Run from anywhere:

    python benchmarks/stage_table.py imagenet /tmp/scale/run500 /tmp/scale/run2000 [--images 500 2000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

ORDER = ["manifest", "split", "extract", "fit", "evaluate", "classifier", "skipped", "seeds", "examples"]


def stage_costs(project: Path, dataset: str) -> pd.DataFrame:
    """Per stage: wall s, CPU s, peak RSS MB and MB written (shards summed, RSS the largest)."""
    folder = project / "results" / "benchmarks" / dataset
    rows = []
    for path in sorted(folder.rglob("*.tsv")):
        stage = path.relative_to(folder).parts[0].removesuffix(".tsv")
        last = pd.read_csv(path, sep="\t").iloc[-1]
        rows.append({"stage": stage, "wall_s": last["s"], "cpu_s": last["cpu_time"], "rss_mb": last["max_rss"],
                     "written_mb": last["io_out"], "jobs": 1})
    table = pd.DataFrame(rows).groupby("stage").agg(
        wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"), rss_mb=("rss_mb", "max"), written_mb=("written_mb", "sum"),
        jobs=("jobs", "sum"))
    return table.reindex([s for s in ORDER if s in table.index] + [s for s in table.index if s not in ORDER])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("projects", type=Path, nargs="+")
    parser.add_argument("--images", type=int, nargs="+", help="images of each run (adds ms/image columns)")
    args = parser.parse_args()
    print("| run | stage | jobs | wall s | CPU s | peak RSS MB | MB written | CPU ms / image |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for k, project in enumerate(args.projects):
        n = args.images[k] if args.images else None
        for stage, row in stage_costs(project, args.dataset).iterrows():
            per_image = f"{1000 * row.cpu_s / n:.1f}" if n else ""
            print(f"| {project.name} | {stage} | {int(row.jobs)} | {row.wall_s:.1f} | {row.cpu_s:.1f} | {row.rss_mb:.0f} | "
                  f"{row.written_mb:.1f} | {per_image} |")


if __name__ == "__main__":
    main()
