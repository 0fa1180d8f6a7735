"""Theory and statistics for BPSK over AWGN: the exact BER and binomial confidence intervals."""

from __future__ import annotations

import math

CONFIDENCE = 0.95
INTERVAL_METHOD = "clopper-pearson"


def ber_bpsk_awgn(ebn0_db: float) -> float:
    """Bit error probability of BPSK over AWGN: Q(sqrt(2 Eb/N0)) = 0.5 erfc(sqrt(Eb/N0)).

    ebn0_db: Eb/N0 in dB.
    """
    return 0.5 * math.erfc(math.sqrt(10.0 ** (ebn0_db / 10.0)))


def clopper_pearson(errors: int, bits: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval for the error probability.

    It never undercovers, and it stays meaningful at 0 errors, where its upper bound
    (about 3.7 / bits at 95 %) is the BER a point can still claim. Computed from the inverse
    regularised incomplete beta function, the same quantity `scipy.stats.binomtest(...)
    .proportion_ci(method="exact")` returns.
    """
    if bits <= 0 or not 0 <= errors <= bits:
        raise ValueError(f"need 0 <= errors <= bits and bits > 0, got {errors}/{bits}")
    # Imported here: scipy.special is only needed by aggregate.
    from scipy.special import betaincinv  # noqa: PLC0415

    alpha = 1.0 - confidence
    low = 0.0 if errors == 0 else float(betaincinv(errors, bits - errors + 1, alpha / 2))
    high = 1.0 if errors == bits else float(betaincinv(errors + 1, bits - errors, 1 - alpha / 2))
    return low, high
