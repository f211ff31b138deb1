"""Four simulated weeks of an orchestrator with the learning loop active.

    python examples/four_weeks.py [DIR] [--seed N]

The simulation itself is learnkit/demo.py (so that ``learnkit demo`` can
run it too): an orchestrator that asks ``kit.admit()`` before each issue,
tracks each one with ``@tracked``, and runs ``kit.learn_once()`` once per
simulated day. This prints the weekly table: success rate, the coverage it
cost, utility per offered issue, and the threshold in force.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from learnkit.demo import simulate, table


def main() -> None:
    ap = argparse.ArgumentParser(description="Four simulated weeks with the learning loop.")
    ap.add_argument("dir", nargs="?", type=Path, help="where to put learnkit.toml and the db")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    target = args.dir or Path(tempfile.mkdtemp(prefix="learnkit-"))
    target.mkdir(parents=True, exist_ok=True)
    print(table(asyncio.run(simulate(target, seed=args.seed))))


if __name__ == "__main__":
    main()
