"""The table comes from results.json alone: its keys, their order, optional titles."""

from __future__ import annotations

from windows_batch_results.render import Column, columns, number


def test_columns_follow_the_documents_keys_and_fold_intervals() -> None:
    document = {
        "interval": {"confidence": 0.99},
        "rows": [{"snr_db": 1.0, "frames": 3, "fer": 0.5, "fer_ci_low": 0.1, "fer_ci_high": 0.9}],
    }
    assert columns(document) == [
        Column("snr_db", "snr_db"),
        Column("frames", "frames"),
        Column("fer", "fer [99 % interval]", ("fer_ci_low", "fer_ci_high")),
    ]


def test_a_study_may_title_its_columns() -> None:
    document = {"columns": {"snr_db": "SNR (dB)"}, "rows": [{"snr_db": 1.0, "frames": 3}]}
    assert [c.title for c in columns(document)] == ["SNR (dB)", "frames"]


def test_numbers() -> None:
    assert [number(v) for v in (0.0, 4.0, 1234567, 2.5e-7, None)] == [
        "0",
        "4",
        "1,234,567",
        "2.500e-07",
        "",
    ]
