"""What one ``PartnerBudgets.admit`` call costs, per request, as a server would make it.

    python bench/budget_admit.py [--partners 20] [--calls 50000] [--json]

Every partner capped below its offered rate (the threshold and the guard both at work), one
call per request with every partner a candidate, times 1 ms apart.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bidfilter.scoring.budget import PartnerBudgets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=20)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    budgets = PartnerBudgets(np.full(args.partners, 300.0))  # offered ~800 calls/s each
    codes = np.arange(args.partners)
    values = rng.beta(1, 4, (1024, args.partners))
    sends = rng.random((1024, args.partners)) < 0.8
    began = time.perf_counter()
    for call in range(args.calls):
        row = call & 1023
        budgets.admit(codes, values[row], sends[row], call * 0.001)
    per_call_us = (time.perf_counter() - began) / args.calls * 1e6
    result = {"partners": args.partners, "calls": args.calls, "us_per_call": round(per_call_us, 2)}
    print(
        json.dumps(result)
        if args.json
        else f"{per_call_us:.1f} µs per call, {args.partners} partners"
    )


if __name__ == "__main__":
    main()
