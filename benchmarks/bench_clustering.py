"""Clustering benchmark: grouping accuracy and time on loghub-dev, against drain3.

    python benchmarks/bench_clustering.py [DATA_DIR]

DATA_DIR defaults to ../shared/data/loghub-dev beside the repository. For the
comparison, ``pip install drain3`` (not a learnkit dependency); without it
only learnkit is measured. Times are the best of 5 cold runs (caches cleared).
"""

from __future__ import annotations

import csv
import logging
import sys
import time
from pathlib import Path

import learnkit
import learnkit._insights.clustering as clustering
from learnkit._insights.clustering import grouping_accuracy

DATASETS = ("HDFS", "OpenSSH", "HealthApp", "Proxifier")


def load(root: Path, name: str) -> tuple[list[str], list[str]]:
    with (root / name / f"{name}_2k.log_structured.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["Content"] for r in rows], [r["EventId"] for r in rows]


def time_learnkit(messages: list[str]) -> tuple[float, list[str]]:
    best, out = float("inf"), []
    for _ in range(5):
        clustering._token_cache.clear()
        t = time.perf_counter()
        out = learnkit.cluster_messages(messages)
        best = min(best, time.perf_counter() - t)
    return best, out


def time_drain3(messages: list[str]) -> tuple[float, list[str]] | None:
    try:
        from drain3 import TemplateMiner  # type: ignore[import-not-found]
    except ImportError:
        return None
    logging.getLogger("drain3").setLevel(logging.ERROR)
    best, out = float("inf"), []
    for _ in range(5):
        t = time.perf_counter()
        miner = TemplateMiner()
        ids = [miner.add_log_message(m)["cluster_id"] for m in messages]
        best = min(best, time.perf_counter() - t)
        out = [str(i) for i in ids]
    return best, out


def main() -> None:
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "loghub-dev"
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    print(f"{'dataset':<10} {'GA':>6} {'time':>8} {'drain3 GA':>10} {'drain3':>8} {'ratio':>6}")
    ga_sum = d_sum = t_sum = dt_sum = 0.0
    have_drain = True
    for name in DATASETS:
        messages, truth = load(root, name)
        t, pred = time_learnkit(messages)
        ga = grouping_accuracy(pred, truth)
        ga_sum += ga
        t_sum += t
        d = time_drain3(messages)
        if d is None:
            have_drain = False
            print(f"{name:<10} {ga:6.3f} {t * 1e3:6.1f}ms")
            continue
        dt, dpred = d
        dga = grouping_accuracy(dpred, truth)
        d_sum += dga
        dt_sum += dt
        print(f"{name:<10} {ga:6.3f} {t * 1e3:6.1f}ms {dga:10.3f} {dt * 1e3:6.1f}ms {t / dt:6.2f}")
    n = len(DATASETS)
    line = f"{'mean':<10} {ga_sum / n:6.3f} {t_sum * 1e3:6.1f}ms"
    if have_drain:
        line += f" {d_sum / n:10.3f} {dt_sum * 1e3:6.1f}ms {t_sum / dt_sum:6.2f}"
    print(line + "   (targets: mean GA >= 0.85; time <= 2x drain3)")


if __name__ == "__main__":
    main()
