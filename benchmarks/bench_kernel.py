"""Kernel throughput against a per-frame baseline and two random-number ceilings.

Measured in one run on this machine, each figure the best of REPEATS interleaved runs:
- kernel: the real command `python -m bersim simulate --max-bits 2e8`, as bits / elapsed_s
  (the kernel loop timed inside Octave) and as bits / wall time of the whole command;
- baseline: a straightforward per-frame loop (benchmarks/octave/bench_baseline.m);
- ceiling rand + randn: Octave alone drawing one rand (the bit) and one randn (the noise) per
  bit on the same count, in the kernel's chunk size (benchmarks/octave/bench_ceiling.m): the
  bound of a simulation that draws bits and noise, and the ceiling issue 2's goals name;
- ceiling randn alone: the same, drawing only the randn per bit. The fast (all-+1) kernel
  draws nothing else, so this, not rand + randn, bounds the kernel itself;
- chunk sizes: the kernel (bersim_kernel.m, fast mode, CPU time) on CHUNK_SWEEP_BITS in chunks of
  2**e for e in CHUNK_SWEEP_EXPONENTS and the default, relative to the default chunk (the figures
  the default is chosen from).
The Octave-side figures are also given in CPU time (Octave's cputime; the kernel loop run
directly): wall time on a machine shared with other work counts waiting for a core, which
can make a loop look faster than the random numbers it draws, CPU time does not.
Goals (issue 2, wall clock): kernel >= 2x baseline and >= 0.9 ceiling (rand + randn); whole
command >= 0.8 ceiling. Against randn alone there is no goal: those ratios say how close the
kernel is to drawing its random numbers and nothing else.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bersim.kernel import DEFAULT_CHUNK_BITS, OCTAVE_DIR

HERE = Path(__file__).resolve().parent
OCTAVE_BENCH_DIR = HERE / "octave"
KERNEL_BITS = 200_000_000
BASELINE_BITS = 20_000_000
EBN0_DB = 4.0
REPEATS = 3
CHUNK_SWEEP_BITS = 50_000_000
CHUNK_SWEEP_EXPONENTS = (12, 15, 18, 20, 22, 24)


def sci(count: int) -> str:
    """A bit count the way people write it on a command line: 2e8."""
    mantissa, exponent = f"{count:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def octave_eval(code: str) -> list[float]:
    """Run Octave code that prints numbers in a fresh octave-cli and return them."""
    script = f'addpath("{OCTAVE_BENCH_DIR.as_posix()}", "{OCTAVE_DIR.as_posix()}"); {code}'
    out = subprocess.run(
        ["octave-cli", "--no-history", "--no-gui", "--norc", "--eval", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    return [float(x) for x in out.split()]


def run_command(seed: int) -> tuple[int, float, float]:
    """Run `python -m bersim simulate` on KERNEL_BITS; return bits, elapsed_s, wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "result.json"
        argv = [
            sys.executable,
            "-m",
            "bersim",
            "simulate",
            "--ebn0-db",
            str(EBN0_DB),
            "--max-bits",
            sci(KERNEL_BITS),
            "--seed",
            str(seed),
            "--output",
            str(output),
        ]
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        wall_s = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[1:])} failed: {done.stderr.strip()}")
        result = json.loads(output.read_text())
    return int(result["bits"]), float(result["elapsed_s"]), wall_s


def _timed(call: str, *, outputs: int) -> tuple[float, float]:
    """(bits per wall second, bits per CPU second) of an Octave call returning [bits, ..., t].

    Wall time is the call's own tic/toc (its last of `outputs` outputs); CPU time is Octave's
    cputime around the call.
    """
    names = ", ".join(f"o{i}" for i in range(1, outputs + 1))
    bits, elapsed_s, cpu_s = octave_eval(
        f"c0 = cputime (); [{names}] = {call}; c = cputime () - c0;"
        f'printf("%d %.9g %.9g\\n", o1, o{outputs}, c);'
    )
    return bits / elapsed_s, bits / cpu_s


def run_kernel_loop(seed: int) -> tuple[float, float]:
    """The kernel alone (bersim_kernel.m, no Python), on KERNEL_BITS in its default chunks."""
    return _timed(f"bersim_kernel ({EBN0_DB}, {KERNEL_BITS}, {seed})", outputs=3)


def run_baseline(seed: int) -> tuple[float, float]:
    """The per-frame loop on BASELINE_BITS."""
    return _timed(f"bench_baseline ({EBN0_DB}, {BASELINE_BITS}, {seed})", outputs=3)


def run_ceiling(seed: int, chunk_bits: int, draws: str = "rand+randn") -> tuple[float, float]:
    """Octave drawing one rand and one randn (or one randn) per bit, on KERNEL_BITS."""
    return _timed(f'bench_ceiling ({KERNEL_BITS}, {chunk_bits}, {seed}, "{draws}")', outputs=2)


def run_chunk_sweep(seed: int, exponents: list[int]) -> dict[int, float]:
    """Bits per CPU second of the kernel per chunk size 2**exponent, in one Octave.

    CPU time (Octave's cputime), not wall time: the sizes differ by a few percent, less than
    what other work on a shared machine does to a wall clock.
    """
    rates = octave_eval(
        f"for e = [{' '.join(str(e) for e in exponents)}]"
        "  t0 = cputime ();"
        f"  b = bersim_kernel({EBN0_DB}, {CHUNK_SWEEP_BITS}, {seed}, 0, 2^e);"
        '  printf("%.9g\\n", b / (cputime () - t0));'
        "end"
    )
    return dict(zip(exponents, rates, strict=True))


FIGURES = {
    "kernel": "kernel (bits / elapsed_s)",
    "command": "whole command (bits / wall time)",
    "baseline": "baseline per-frame loop",
    "ceiling": "ceiling rand + randn (issue 2's goals)",
    "randn": "ceiling randn alone (what the fast kernel draws)",
}
RATIOS = {
    "kernel/baseline": ("kernel", "baseline"),
    "kernel/ceiling": ("kernel", "ceiling"),
    "whole command/ceiling": ("command", "ceiling"),
    "kernel/randn alone": ("kernel", "randn"),
    "whole command/randn alone": ("command", "randn"),
}
GOALS = {"kernel/baseline": 2.0, "kernel/ceiling": 0.9, "whole command/ceiling": 0.8}
CPU_FIGURES = {
    "kernel": "kernel loop alone (bersim_kernel.m)",
    "baseline": "baseline per-frame loop",
    "ceiling": "ceiling rand + randn",
    "randn": "ceiling randn alone",
}
CPU_RATIOS = {
    "kernel/baseline": ("kernel", "baseline"),
    "kernel/ceiling": ("kernel", "ceiling"),
    "kernel/randn alone": ("kernel", "randn"),
}


def _print_ratios(
    best: dict[str, float], ratios: dict[str, tuple[str, str]], goals: dict[str, float]
) -> None:
    for ratio, (a, b) in ratios.items():
        value = best[a] / best[b]
        if ratio in goals:
            verdict = "PASS" if value >= goals[ratio] else "MISS"
            print(f"  {ratio:<26} {value:5.2f}  goal >= {goals[ratio]:g}  {verdict}")
        else:
            print(f"  {ratio:<26} {value:5.2f}  (no goal)")


def main() -> None:
    chunk_bits = DEFAULT_CHUNK_BITS
    default_exponent = chunk_bits.bit_length() - 1
    exponents = sorted({*CHUNK_SWEEP_EXPONENTS, default_exponent})
    rates: dict[str, list[float]] = {name: [] for name in FIGURES}
    cpu_rates: dict[str, list[float]] = {name: [] for name in CPU_FIGURES}
    sweeps: list[dict[int, float]] = []
    print(
        f"kernel: python -m bersim simulate --max-bits {sci(KERNEL_BITS)} at {EBN0_DB:g} dB; "
        f"baseline: per-frame loop on {sci(BASELINE_BITS)} bits; "
        f"ceilings: rand + randn, and randn alone, on {sci(KERNEL_BITS)} bits in chunks of "
        f"{chunk_bits} (the kernel's default)",
        flush=True,
    )
    for run in range(1, REPEATS + 1):
        bits, elapsed_s, wall_s = run_command(seed=run)
        rates["kernel"].append(bits / elapsed_s)
        rates["command"].append(bits / wall_s)
        cpu_rates["kernel"].append(run_kernel_loop(seed=run)[1])
        for name, (wall, cpu) in {
            "baseline": run_baseline(seed=run),
            "ceiling": run_ceiling(seed=run, chunk_bits=chunk_bits),
            "randn": run_ceiling(seed=run, chunk_bits=chunk_bits, draws="randn"),
        }.items():
            rates[name].append(wall)
            cpu_rates[name].append(cpu)
        sweeps.append(run_chunk_sweep(seed=run, exponents=exponents))
        figures = ", ".join(f"{name} {values[-1]:.3g}" for name, values in rates.items())
        paired = ", ".join(
            f"{ratio} {rates[a][-1] / rates[b][-1]:.2f}" for ratio, (a, b) in RATIOS.items()
        )
        print(f"  run {run} (bit/s): {figures}; {paired}", flush=True)
    # Other work on the machine only ever slows a run down, so the best run is the figure.
    best = {name: max(values) for name, values in rates.items()}
    print(f"best of {REPEATS} runs (bit/s, wall clock):")
    for name, label in FIGURES.items():
        print(f"  {label:<50} {best[name]:.3g}")
    print("ratios (best runs, wall clock):")
    _print_ratios(best, RATIOS, GOALS)
    # CPU time does not count waiting for a core, so these hold on a busy machine too.
    best_cpu = {name: max(values) for name, values in cpu_rates.items()}
    print(f"best of {REPEATS} runs (bit per CPU s, Octave's cputime):")
    for name, label in CPU_FIGURES.items():
        print(f"  {label:<50} {best_cpu[name]:.3g}")
    print("ratios (best runs, CPU time):")
    _print_ratios(best_cpu, CPU_RATIOS, {})
    best_sweep = {e: max(s[e] for s in sweeps) for e in exponents}
    print(
        f"kernel loop per chunk size ({sci(CHUNK_SWEEP_BITS)} bits, best of {REPEATS}), "
        f"relative to the default 2^{default_exponent}:"
    )
    for exponent, rate in best_sweep.items():
        mark = "  (default)" if exponent == default_exponent else ""
        relative = rate / best_sweep[default_exponent]
        print(f"  2^{exponent:<3} {rate:9.3g} bit per CPU s  {relative:5.2f}{mark}")


if __name__ == "__main__":
    main()
