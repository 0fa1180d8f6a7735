"""The Octave kernel and its bridge, against the real GNU Octave.

Statistics: one seed's error count is one draw, so the checks of what the kernel counts test
the distribution over SEEDS_PER_POINT seeds. False-alarm rate: a correct kernel fails each
check with probability ALPHA_PER_CHECK = FALSE_ALARM / STATISTICAL_CHECKS = 1e-3 / 15, about
6.7e-5, for seeds drawn at random, and any of the 15 with at most FALSE_ALARM = 1e-3
(Bonferroni). The seeds are 1..SEEDS_PER_POINT, not chosen. The bit counts make a threshold 1 %
off, a noise scale 2 % off, an ignored seed or a computed (not drawn) count fail. Every other
check is exact (same seed, same count).
"""

from __future__ import annotations

import functools
import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.special import erfc
from scipy.stats import binomtest, chi2, fisher_exact

from bersim.kernel import (
    DEFAULT_CHUNK_BITS,
    MODES,
    OCTAVE_DIR,
    KernelError,
    run_kernel,
)

pytestmark = pytest.mark.octave

SEEDS_PER_POINT = 20
# (Eb/N0 dB, bits per seed): Pb 7.9e-2, 1.25e-2 and 1.9e-4, about 1570, 1250 and 190 errors
# per seed, enough for the normal approximation behind the variance check.
POINTS = [(0.0, 20_000), (4.0, 100_000), (8.0, 1_000_000)]
FALSE_ALARM = 1e-3
STATISTICAL_CHECKS = len(POINTS) * (2 * len(MODES) + 1)
"""Per point: mean and spread for each mode, and fast against explicit."""
ALPHA_PER_CHECK = FALSE_ALARM / STATISTICAL_CHECKS


def theory_ber(ebn0_db: float) -> float:
    """Bit-error probability of BPSK over AWGN: 0.5*erfc(sqrt(Eb/N0))."""
    return float(0.5 * erfc(math.sqrt(10 ** (ebn0_db / 10))))


def octave(script: str, *, timeout_s: float = 120) -> str:
    """Stdout of octave-cli running `script` with the kernel on its path."""
    return subprocess.run(
        [
            "octave-cli",
            "--no-history",
            "--no-gui",
            "--norc",
            "--eval",
            f'addpath("{OCTAVE_DIR.as_posix()}"); {script}',
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout_s,
    ).stdout


@functools.cache
def kernel_counts(ebn0_db: float, max_bits: int, mode: str) -> tuple[int, ...]:
    """Error counts of the kernel for seeds 1..SEEDS_PER_POINT, all in one Octave process."""
    out = octave(
        f"for seed = 1:{SEEDS_PER_POINT}"
        f'  [bits, errors] = bersim_kernel({ebn0_db}, {max_bits}, seed, 0, [], "{mode}");'
        f"  assert(bits == {max_bits});"
        '  printf("%d\\n", errors);'
        "end"
    )
    counts = tuple(int(x) for x in out.split())
    assert len(counts) == SEEDS_PER_POINT, out
    return counts


def mean_p_value(counts: tuple[int, ...], max_bits: int, ber: float) -> float:
    """Exact two-sided binomial test of the total: seeds' counts add up to Binomial(N, Pb)."""
    return float(binomtest(sum(counts), len(counts) * max_bits, ber).pvalue)


def spread_p_value(counts: tuple[int, ...], max_bits: int, ber: float) -> float:
    """Two-sided test that the counts vary across seeds as independent Binomial(n, Pb) do.

    The sum of squared deviations from the seeds' mean over the binomial variance is
    chi-square with (seeds - 1) degrees of freedom; too little spread (the seed not used, a
    count that is computed rather than drawn) fails like too much (chunks not independent).
    """
    x = np.asarray(counts, dtype=float)
    statistic = float(((x - x.mean()) ** 2).sum()) / (max_bits * ber * (1 - ber))
    dof = len(counts) - 1
    return float(2 * min(chi2.cdf(statistic, dof), chi2.sf(statistic, dof)))


def octave_children() -> list[int]:
    """Pids of Octave processes this test process started and that are still alive."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == os.getpid() and "octave" in comm and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("ebn0_db", "max_bits"), [pytest.param(*p, id=f"{p[0]:g}dB") for p in POINTS]
)
def test_error_counts_over_seeds_follow_the_binomial_law_of_theory(
    ebn0_db: float, max_bits: int, mode: str
) -> None:
    """Across seeds, the counts have theory's mean and a binomial spread.

    False alarm: ALPHA_PER_CHECK (about 6.7e-5) for each of the two checks.
    """
    counts = kernel_counts(ebn0_db, max_bits, mode)
    ber = theory_ber(ebn0_db)

    assert mean_p_value(counts, max_bits, ber) > ALPHA_PER_CHECK, (counts, ber)
    assert spread_p_value(counts, max_bits, ber) > ALPHA_PER_CHECK, (counts, ber)


@pytest.mark.parametrize(
    ("ebn0_db", "max_bits"), [pytest.param(*p, id=f"{p[0]:g}dB") for p in POINTS]
)
def test_fast_kernel_is_equivalent_to_explicit_bits_and_noise(
    ebn0_db: float, max_bits: int
) -> None:
    """All-+1 transmission (fast) and random bits + mapping + noise (explicit) agree.

    Fisher's exact test that the two modes' pooled counts share one error rate; false alarm
    ALPHA_PER_CHECK. Each mode against theory is the test above.
    """
    fast = sum(kernel_counts(ebn0_db, max_bits, "fast"))
    explicit = sum(kernel_counts(ebn0_db, max_bits, "explicit"))
    bits = SEEDS_PER_POINT * max_bits

    table = [[fast, bits - fast], [explicit, bits - explicit]]
    assert fisher_exact(table).pvalue > ALPHA_PER_CHECK, table


@pytest.mark.parametrize("mode", MODES)
def test_the_bridge_passes_the_seed_and_a_seed_repeats_its_count(mode: str) -> None:
    """Exact: run_kernel's count for a seed is the kernel's for that seed, every time."""
    ebn0_db, max_bits = POINTS[0]
    direct = kernel_counts(ebn0_db, max_bits, mode)
    bridged = [
        run_kernel(ebn0_db=ebn0_db, max_bits=max_bits, seed=seed, mode=mode) for seed in (1, 2, 1)
    ]

    assert [(r.bits, r.errors) for r in bridged] == [
        (max_bits, direct[0]),
        (max_bits, direct[1]),
        (max_bits, direct[0]),
    ]
    for result in bridged:
        assert result.elapsed_s > 0
        assert re.fullmatch(r"\d+\.\d+\.\d+", result.octave_version)


def test_count_does_not_depend_on_chunk_size() -> None:
    """Chunks cut one random stream, so the chunk size changes memory, not the result."""
    whole = run_kernel(ebn0_db=2.0, max_bits=1_000_003, seed=5, chunk_bits=1_000_003)
    chunked = run_kernel(ebn0_db=2.0, max_bits=1_000_003, seed=5, chunk_bits=65_536)

    assert (chunked.bits, chunked.errors) == (whole.bits, whole.errors)


@pytest.mark.parametrize(
    ("max_bits", "chunk_bits"),
    [
        pytest.param(1_000_003, 65_536, id="partial-last-chunk"),
        pytest.param(12_345, None, id="smaller-than-one-chunk"),
        pytest.param(3 * DEFAULT_CHUNK_BITS, None, id="whole-chunks"),
        pytest.param(1, None, id="one-bit"),
    ],
)
def test_without_early_stop_simulates_exactly_max_bits(
    max_bits: int, chunk_bits: int | None
) -> None:
    result = run_kernel(ebn0_db=0.0, max_bits=max_bits, seed=3, chunk_bits=chunk_bits)

    assert result.bits == max_bits
    assert 0 <= result.errors <= max_bits


@pytest.mark.parametrize(
    "max_bits",
    [
        pytest.param(10_000_000, id="1e7"),
        # Far beyond 2**32 and int32: the counts must stay exact.
        pytest.param(10**12, id="1e12"),
    ],
)
def test_early_stop_stops_within_one_chunk_of_the_target(max_bits: int) -> None:
    chunk_bits, target = 16_384, 1_000  # about 205 errors per chunk at 4 dB
    stopped = run_kernel(
        ebn0_db=4.0, max_bits=max_bits, seed=9, target_errors=target, chunk_bits=chunk_bits
    )

    assert stopped.bits < max_bits
    assert stopped.bits % chunk_bits == 0
    assert stopped.errors >= target
    # The same stream without early stop, one chunk shorter, had not reached the target yet.
    before = run_kernel(
        ebn0_db=4.0, max_bits=stopped.bits - chunk_bits, seed=9, chunk_bits=chunk_bits
    )
    assert before.errors < target


def test_unreached_target_simulates_all_bits() -> None:
    result = run_kernel(ebn0_db=10.0, max_bits=100_000, seed=1, target_errors=1_000)

    assert result.bits == 100_000
    assert result.errors < 1_000


def test_octave_failure_raises_kernel_error_and_closes_octave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KernelError, match="unknown mode"):
        run_kernel(ebn0_db=0.0, max_bits=10, seed=1, mode="no-such-mode")

    assert octave_children() == []
    # Closing Octave must not leave its crash dump (`octave-workspace`) in the working directory.
    run_kernel(ebn0_db=0.0, max_bits=10, seed=1)
    assert list(tmp_path.iterdir()) == []


def _peak_rss_kib(max_bits: int) -> int:
    """Peak resident memory (VmHWM) of an Octave process that ran the kernel on max_bits."""
    script = (
        f"[bits, errors] = bersim_kernel(0, {max_bits}, 1);"
        f"assert(bits == {max_bits});"
        'printf("%s", fileread("/proc/self/status"));'
    )
    out = octave(script)
    match = re.search(r"^VmHWM:\s+(\d+) kB$", out, re.MULTILINE)
    assert match, out
    return int(match.group(1))


def test_memory_does_not_grow_with_max_bits() -> None:
    # 30x more bits; holding them at once would need ~230 MB more (doubles), chunks need none.
    small = _peak_rss_kib(1_000_000)
    large = _peak_rss_kib(30_000_000)

    assert abs(large - small) < 16 * 1024, (small, large)
