"""The Octave kernel and its bridge, against the real GNU Octave.

Statistics: every check uses a fixed seed, so it is deterministic; the 99.9 % levels say how
unlikely a correct kernel is to fail on a fresh seed, and the bit counts are chosen so a wrong
threshold, noise scale or count would fail clearly.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import pytest
from scipy.special import erfc
from scipy.stats import binomtest, norm

from bersim.kernel import OCTAVE_DIR, KernelError, KernelResult, run_kernel

pytestmark = pytest.mark.octave

CONFIDENCE = 0.999
DEFAULT_CHUNK_BITS = 2**18
"""The kernel's default chunk (bersim_kernel.m)."""


def theory_ber(ebn0_db: float) -> float:
    """Bit-error probability of BPSK over AWGN: 0.5*erfc(sqrt(Eb/N0))."""
    return float(0.5 * erfc(math.sqrt(10 ** (ebn0_db / 10))))


def clopper_pearson(errors: int, bits: int) -> tuple[float, float]:
    """Exact 99.9 % binomial interval for the bit-error rate."""
    ci = binomtest(errors, bits).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return ci.low, ci.high


def two_proportion_p_value(a: KernelResult, b: KernelResult) -> float:
    """Two-sided p-value of the pooled z-test that two runs share one error rate."""
    pooled = (a.errors + b.errors) / (a.bits + b.bits)
    se = math.sqrt(pooled * (1 - pooled) * (1 / a.bits + 1 / b.bits))
    z = (a.errors / a.bits - b.errors / b.bits) / se
    return float(2 * norm.sf(abs(z)))


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


@pytest.mark.parametrize(
    ("ebn0_db", "max_bits"),
    [
        # Pb 7.9e-2, 1.25e-2 and 1.9e-4: about 79 000, 12 500 and 3 800 expected errors.
        pytest.param(0.0, 1_000_000, id="0dB"),
        pytest.param(4.0, 1_000_000, id="4dB"),
        pytest.param(8.0, 20_000_000, id="8dB"),
    ],
)
def test_ber_matches_theory(ebn0_db: float, max_bits: int) -> None:
    result = run_kernel(ebn0_db=ebn0_db, max_bits=max_bits, seed=20240601)

    assert result.bits == max_bits
    low, high = clopper_pearson(result.errors, result.bits)
    assert low <= theory_ber(ebn0_db) <= high, (result, low, high, theory_ber(ebn0_db))
    assert result.elapsed_s > 0
    assert re.fullmatch(r"\d+\.\d+\.\d+", result.octave_version)


@pytest.mark.parametrize(
    ("ebn0_db", "max_bits"),
    [
        pytest.param(0.0, 2_000_000, id="0dB"),
        pytest.param(3.0, 2_000_000, id="3dB"),
        pytest.param(6.0, 4_000_000, id="6dB"),
    ],
)
def test_fast_kernel_is_equivalent_to_explicit_bits_and_noise(
    ebn0_db: float, max_bits: int
) -> None:
    """All-+1 transmission (fast) and random bits + mapping + noise (explicit) agree."""
    fast = run_kernel(ebn0_db=ebn0_db, max_bits=max_bits, seed=11, mode="fast")
    explicit = run_kernel(ebn0_db=ebn0_db, max_bits=max_bits, seed=12, mode="explicit")

    for result in (fast, explicit):
        assert result.bits == max_bits
        low, high = clopper_pearson(result.errors, result.bits)
        assert low <= theory_ber(ebn0_db) <= high, (result, low, high)
    assert two_proportion_p_value(fast, explicit) > 1 - CONFIDENCE, (fast, explicit)


@pytest.mark.parametrize("mode", ["fast", "explicit"])
def test_seed_determines_the_count(mode: str) -> None:
    first = run_kernel(ebn0_db=0.0, max_bits=10_000_000, seed=7, mode=mode)
    again = run_kernel(ebn0_db=0.0, max_bits=10_000_000, seed=7, mode=mode)
    other = run_kernel(ebn0_db=0.0, max_bits=10_000_000, seed=8, mode=mode)

    assert (again.bits, again.errors) == (first.bits, first.errors)
    # Two seeds' counts differ by ~1200 (one standard deviation), so equal counts have a
    # chance of ~3e-4. With 1e6 bits they are that unlucky: seeds 7 and 8 both count 78 743.
    assert other.errors != first.errors


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
        f'addpath("{OCTAVE_DIR.as_posix()}");'
        f"[bits, errors] = bersim_kernel(0, {max_bits}, 1);"
        f"assert(bits == {max_bits});"
        'printf("%s", fileread("/proc/self/status"));'
    )
    out = subprocess.run(
        ["octave-cli", "--no-history", "--no-gui", "--norc", "--eval", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    match = re.search(r"^VmHWM:\s+(\d+) kB$", out, re.MULTILINE)
    assert match, out
    return int(match.group(1))


def test_memory_does_not_grow_with_max_bits() -> None:
    # 30x more bits; holding them at once would need ~230 MB more (doubles), chunks need none.
    small = _peak_rss_kib(1_000_000)
    large = _peak_rss_kib(30_000_000)

    assert abs(large - small) < 16 * 1024, (small, large)
