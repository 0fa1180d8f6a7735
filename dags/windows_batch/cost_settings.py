"""The cost model's settings: what the DAG file reads when it is parsed (settings.py).

The model itself (estimates, the measured timeline, prices from AWS) is `cost.py`, which
re-exports these names; only the settings are needed to build the DAGs, and the model's many
small classes are then imported when a task runs, not at every parse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

PREFIX = "AIRFLOW__WINDOWS_BATCH__"
PURCHASE_OPTIONS = ("on-demand", "spot")
PRICE_SOURCES = ("aws", "table")
HOURS_PER_MONTH = 730.0
"""AWS's monthly prices (EBS per GB-month) are for 730 hours."""
AUTO = "auto"

DEFAULT_ON_DEMAND_USD_PER_H: dict[str, float] = {
    "c5.xlarge": 0.354,
    "c5a.xlarge": 0.338,
    "c6i.xlarge": 0.354,
    "m5.xlarge": 0.376,
    "m6i.xlarge": 0.376,
}
"""Windows On-Demand, us-east-1, 2025 (see the module docstring), USD per instance-hour."""


class CostSettingsError(ValueError):
    """A cost or estimate setting has a value the DAG cannot use."""


@dataclass(frozen=True)
class CostSettings:
    """The cost and estimate settings (see the module docstring for keys and defaults)."""

    instance_types: tuple[str, ...] = ("c5.xlarge",)
    purchase_option: str = "on-demand"
    on_demand_base: int = 0
    on_demand_usd_per_h: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_ON_DEMAND_USD_PER_H)
    )
    spot_price_fraction: float = 0.7
    price_source: str = "aws"
    boot_s: float = 900.0
    pull_s: float = 300.0
    scale_in_s: float = 60.0
    task_start_s: float = 30.0
    auto_slowdown: float = 1.25
    warm_pool_size: int = 0
    warm_start_s: float = 120.0
    root_volume_gib: float = 100.0
    ebs_usd_per_gb_month: float = 0.08
    queued_s: float = 30.0

    def pool_covers(self, size: int) -> bool:
        """Whether every instance of a `size` cluster can start from the warm pool."""
        return 0 < size <= self.warm_pool_size

    @property
    def pool_ebs_usd_per_h(self) -> float:
        """What the stopped warm pool bills per hour: its instances' root volumes."""
        return (
            self.warm_pool_size * self.root_volume_gib * self.ebs_usd_per_gb_month / HOURS_PER_MONTH
        )


def _number(env: Mapping[str, str], key: str, default: float, *, low: float, high: float) -> float:
    raw = env.get(PREFIX + key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise CostSettingsError(f"{PREFIX}{key}={raw!r} is not a number") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise CostSettingsError(f"{PREFIX}{key}={raw} is outside [{low:g}, {high:g}]")
    return value


def parse_prices(raw: str) -> dict[str, float]:
    """`c5.xlarge=0.354,m5.xlarge=0.376` -> {type: USD per hour}; raise CostSettingsError."""
    prices: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, _, value = item.partition("=")
        try:
            price = float(value)
        except ValueError:
            price = math.nan
        if not name.strip() or not (math.isfinite(price) and price >= 0):
            raise CostSettingsError(
                f"{PREFIX}PRICES: {item!r} is not `instance-type=USD per hour` "
                "(e.g. c5.xlarge=0.354)"
            )
        prices[name.strip()] = price
    return prices


def load_cost_settings(env: Mapping[str, str], *, backend: str) -> CostSettings:
    """Read the cost settings from `env`; raise CostSettingsError if one is invalid."""

    def text(key: str, default: str) -> str:
        return env.get(PREFIX + key, "").strip() or default

    types = tuple(t.strip() for t in text("INSTANCE_TYPES", "c5.xlarge").split(",") if t.strip())
    purchase = text("PURCHASE_OPTION", "on-demand").lower()
    if purchase not in PURCHASE_OPTIONS:
        raise CostSettingsError(
            f"{PREFIX}PURCHASE_OPTION={purchase!r}: use one of {', '.join(PURCHASE_OPTIONS)}"
        )
    source = text("PRICE_SOURCE", "table" if backend == "local" else "aws").lower()
    if source not in PRICE_SOURCES:
        raise CostSettingsError(
            f"{PREFIX}PRICE_SOURCE={source!r}: use one of {', '.join(PRICE_SOURCES)}"
        )
    return CostSettings(
        instance_types=types or ("c5.xlarge",),
        purchase_option=purchase,
        on_demand_base=int(_number(env, "ON_DEMAND_BASE", 0, low=0, high=1000)),
        on_demand_usd_per_h={**DEFAULT_ON_DEMAND_USD_PER_H, **parse_prices(text("PRICES", ""))},
        spot_price_fraction=_number(env, "SPOT_PRICE_FRACTION", 0.7, low=0.01, high=1.0),
        price_source=source,
        boot_s=_number(env, "BOOT_S", 900, low=0, high=7200),
        pull_s=_number(env, "PULL_S", 300, low=0, high=7200),
        scale_in_s=_number(env, "SCALE_IN_S", 60, low=0, high=7200),
        task_start_s=_number(env, "TASK_START_S", 30, low=0, high=3600),
        auto_slowdown=_number(env, "AUTO_SLOWDOWN", 1.25, low=1.0, high=100.0),
        warm_pool_size=int(_number(env, "WARM_POOL_SIZE", 0, low=0, high=1000)),
        warm_start_s=_number(env, "WARM_START_S", 120, low=0, high=7200),
        root_volume_gib=_number(env, "ROOT_VOLUME_GIB", 100, low=1, high=65536),
        ebs_usd_per_gb_month=_number(env, "EBS_USD_PER_GB_MONTH", 0.08, low=0, high=10),
        queued_s=_number(env, "QUEUED_S", 30, low=0, high=7200),
    )
