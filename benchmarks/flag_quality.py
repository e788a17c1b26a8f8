"""How well the accuracy judgement flags bad workers with little gold: precision and recall over many seeded crowds.

Run: .venv/bin/python benchmarks/flag_quality.py [--seeds 100]

Each crowd is the issue's: 16 honest workers (accuracy drawn from 0.70-0.95), 3 answering at random and 3 always
giving one label, gold at 8% on the engine's schedule, 60 tasks each, the project's minimum 0.60, flagged at a
posterior probability of 0.90 (tests/qualification/test_judgement.py `simulate`, which judges after every task
with the others' current estimates, as market/quality/scoring.py does). It prints, per HIT shape, the share of crowds
whose flags reach precision and recall 0.9, the mean precision and recall, and the honest workers flagged per
hundred; then the same for a crowd of honest workers only (every flag a false one).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.qualification.test_judgement import simulate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    args = parser.parse_args()
    shapes = ((2, 3), (1, 3), (1, 5), (5, 3))
    print(f"{args.seeds} seeded crowds each; 8% gold, 60 tasks per worker, minimum 0.60, flag at P >= 0.90")
    print("items/HIT  answers/item  runs >= 0.9 both  mean precision  mean recall  honest flagged per 100")
    for items_per_hit, redundancy in shapes:
        runs = [simulate(1000 + seed, items_per_hit=items_per_hit, redundancy=redundancy)
                for seed in range(args.seeds)]
        good = sum(p >= 0.9 and r >= 0.9 for p, r, _ in runs) / len(runs)
        precision = statistics.mean(p for p, _, _ in runs)
        recall = statistics.mean(r for _, r, _ in runs)
        false = statistics.mean(f for _, _, f in runs)
        print(f"{items_per_hit:9d}  {redundancy:12d}  {good:16.0%}  {precision:14.3f}  {recall:11.3f}  "
              f"{100 * false / 16:22.2f}")
    honest = [simulate(5000 + seed, honest=22, bad=0)[2] for seed in range(args.seeds)]
    print(f"honest-only crowds (22 workers, HITs of 2 x 3): {100 * statistics.mean(honest) / 22:.2f} workers "
          "flagged per 100")
    return 0


if __name__ == "__main__":
    sys.exit(main())
