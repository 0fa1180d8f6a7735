"""Monte Carlo price of a European call under geometric Brownian motion, in batches of paths.

    python price_batches.py --strike=K --batches=1-10 --spot=100 --volatility=0.2 --rate=0.03
        --maturity=1 --paths=20000 --seed=7 --variance=antithetic --out=DIR
    python price_batches.py summarize --results=DIR --strikes=80-120:10 --batches=40 ...

Pricing writes DIR/strike-<K>/batches-<first>-<last>.json: per batch, the number of samples and
the sum and sum of squares of the discounted payoffs. Each batch's random stream is seeded from
(seed, strike, batch) alone, so a batch gives the same numbers whichever task prices it.

`summarize` combines every batch of every strike (each counted once: a batch found twice is an
error), and writes DIR/results.json (the table: price, 95 % interval, Black-Scholes price),
DIR/results.csv and DIR/results.png. Missing batches are listed, not guessed.

Exit codes: 0 done; 1 a failure; 2 bad arguments (a retry cannot help).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

CONFIDENCE = 0.95
Z_95 = 1.959963984540054


def int_range(text: str) -> list[int]:
    """An OpenJD integer range expression ("1-10", "1-9:2", "3,5,7-9") as its values."""
    values: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(-?\d+)(?:\s*-\s*(-?\d+)(?:\s*:\s*(-?\d+))?)?\s*", part)
        if not match:
            raise ValueError(f"{text!r} is not a range expression")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else start
        step = int(match.group(3)) if match.group(3) else (1 if end >= start else -1)
        if step == 0 or (end - start) * step < 0:
            raise ValueError(f"{text!r} is not a range expression")
        values.extend(range(start, end + (1 if step > 0 else -1), step))
    return values


def black_scholes_call(*, spot: float, strike: float, rate: float, vol: float, t: float) -> float:
    """The closed-form price the Monte Carlo estimate must agree with."""
    d1 = (math.log(spot / strike) + (rate + vol * vol / 2) * t) / (vol * math.sqrt(t))
    d2 = d1 - vol * math.sqrt(t)

    def cdf(x: float) -> float:
        return 0.5 * (1 + math.erf(x / math.sqrt(2)))

    return spot * cdf(d1) - strike * math.exp(-rate * t) * cdf(d2)


def price_batch(args: argparse.Namespace, strike: int, batch: int) -> dict[str, Any]:
    import numpy as np  # noqa: PLC0415 (only the pricing needs it)

    rng = np.random.default_rng(np.random.SeedSequence([args.seed, strike, batch]))
    drift = (args.rate - 0.5 * args.volatility**2) * args.maturity
    scale = args.volatility * math.sqrt(args.maturity)
    discount = math.exp(-args.rate * args.maturity)
    if args.variance == "antithetic":
        z = rng.standard_normal((args.paths + 1) // 2)
        up = np.maximum(args.spot * np.exp(drift + scale * z) - strike, 0.0)
        down = np.maximum(args.spot * np.exp(drift - scale * z) - strike, 0.0)
        samples = discount * 0.5 * (up + down)
    else:
        z = rng.standard_normal(args.paths)
        samples = discount * np.maximum(args.spot * np.exp(drift + scale * z) - strike, 0.0)
    return {
        "batch": batch,
        "samples": int(samples.size),
        "paths": int(args.paths),
        "sum": float(samples.sum()),
        "sum_sq": float(np.square(samples).sum()),
    }


def price(args: argparse.Namespace) -> int:
    batches = int_range(args.batches)
    records = [price_batch(args, args.strike, b) for b in batches]
    folder = Path(args.out) / f"strike-{args.strike}"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"batches-{batches[0]}-{batches[-1]}.json"
    document = {"strike": args.strike, "variance": args.variance, "batches": records}
    (folder / name).write_text(json.dumps(document), encoding="utf-8")
    paths = sum(r["paths"] for r in records)
    print(f"strike {args.strike}: {len(records)} batches, {paths} paths -> {folder / name}")
    return 0


def summarize(args: argparse.Namespace) -> int:
    root = Path(args.results)
    strikes = int_range(args.strikes)
    wanted = set(range(1, args.batches + 1))
    rows = []
    missing_total = 0
    inside = 0
    for strike in strikes:
        seen: dict[int, dict[str, Any]] = {}
        for path in sorted((root / f"strike-{strike}").glob("batches-*.json")):
            document = json.loads(path.read_text(encoding="utf-8"))
            for record in document["batches"]:
                if record["batch"] in seen:
                    print(
                        f"error: batch {record['batch']} of strike {strike} found twice",
                        file=sys.stderr,
                    )
                    return 1
                seen[record["batch"]] = record
        missing = sorted(wanted - set(seen))
        missing_total += len(missing)
        n = sum(r["samples"] for r in seen.values())
        exact = black_scholes_call(
            spot=args.spot, strike=strike, rate=args.rate, vol=args.volatility, t=args.maturity
        )
        row: dict[str, Any] = {
            "strike": strike,
            "batches": len(seen),
            "paths": sum(r["paths"] for r in seen.values()),
            "black_scholes": exact,
        }
        if n >= 2:
            mean = sum(r["sum"] for r in seen.values()) / n
            var = max(sum(r["sum_sq"] for r in seen.values()) / n - mean * mean, 0.0) * n / (n - 1)
            half = Z_95 * math.sqrt(var / n)
            row.update(price=mean, price_ci_low=mean - half, price_ci_high=mean + half)
            inside += int(mean - half <= exact <= mean + half)
        else:
            row.update(price=None, price_ci_low=None, price_ci_high=None)
        row["missing_batches"] = len(missing)
        rows.append(row)
    priced = [r for r in rows if r["price"] is not None]
    summary = (
        f"{len(strikes)} strikes, {sum(r['paths'] for r in rows):,} paths; Black-Scholes inside "
        f"the 95 % interval at {inside} of {len(priced)}"
        + (f"; {missing_total} batches MISSING" if missing_total else "")
    )
    comment = Path(args.comment_file).read_text(encoding="utf-8") if args.comment_file else ""
    document = {
        "summary": summary,
        "columns": {
            "strike": "Strike",
            "batches": "Batches",
            "paths": "Paths",
            "price": "Price (Monte Carlo)",
            "black_scholes": "Black-Scholes",
            "missing_batches": "Missing batches",
        },
        "interval": {"confidence": CONFIDENCE, "method": "normal approximation"},
        "theory": "Black-Scholes closed form",
        "comment": comment,
        "rows": rows,
    }
    (root / "results.json").write_text(json.dumps(document, indent=1), encoding="utf-8")
    header = [
        "strike",
        "batches",
        "paths",
        "price",
        "price_ci_low",
        "price_ci_high",
        "black_scholes",
        "missing_batches",
    ]
    lines = [",".join(header)] + [
        ",".join(
            "" if r[k] is None else f"{r[k]:.10g}" if isinstance(r[k], float) else str(r[k])
            for k in header
        )
        for r in rows
    ]
    (root / "results.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot(root / "results.png", priced, args)
    print(summary)
    return 0


def plot(path: Path, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import matplotlib  # noqa: PLC0415 (only the summary plots)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    strikes = [r["strike"] for r in rows]
    prices = [r["price"] for r in rows]
    errors = [
        [r["price"] - r["price_ci_low"] for r in rows],
        [r["price_ci_high"] - r["price"] for r in rows],
    ]
    axes.errorbar(strikes, prices, yerr=errors, fmt="o", capsize=4, label="Monte Carlo, 95 %")
    if strikes:
        grid = [min(strikes) + i * (max(strikes) - min(strikes)) / 100 for i in range(101)]
        axes.plot(
            grid,
            [
                black_scholes_call(
                    spot=args.spot, strike=k, rate=args.rate, vol=args.volatility, t=args.maturity
                )
                for k in grid
            ],
            label="Black-Scholes",
        )
    axes.set_xlabel("strike")
    axes.set_ylabel("call price")
    axes.set_title(
        f"European call, spot {args.spot:g}, vol {args.volatility:g}, T {args.maturity:g} y"
    )
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--spot", type=float, required=True)
    common.add_argument("--volatility", type=float, required=True)
    common.add_argument("--rate", type=float, required=True)
    common.add_argument("--maturity", type=float, required=True)
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[common])
    top.add_argument("--strike", type=int)
    top.add_argument("--batches")
    top.add_argument("--paths", type=int)
    top.add_argument("--seed", type=int)
    top.add_argument("--variance", choices=["plain", "antithetic"])
    top.add_argument("--out")
    return top


def summary_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="price_batches.py summarize")
    for name in ("--spot", "--volatility", "--rate", "--maturity"):
        p.add_argument(name, type=float, required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--strikes", required=True)
    p.add_argument("--batches", type=int, required=True)
    p.add_argument("--comment-file", default="")
    return p


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["summarize"]:
            return summarize(summary_parser().parse_args(argv[1:]))
        args = parser().parse_args(argv)
        missing = [
            n
            for n in ("strike", "batches", "paths", "seed", "variance", "out")
            if getattr(args, n) is None
        ]
        if missing:
            print(f"error: missing --{', --'.join(missing)}", file=sys.stderr)
            return 2
        if args.paths < 1 or args.spot <= 0 or args.volatility <= 0 or args.maturity <= 0:
            print("error: paths, spot, volatility and maturity must be positive", file=sys.stderr)
            return 2
        return price(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
