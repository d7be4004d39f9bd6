"""The tables of the held-out and golden-set figures, a column per model."""

from __future__ import annotations

from l2loop.demo.figures import Figures, render_figures


def _figures(name: str, fp_rate: float, recall: float) -> Figures:
    source = {"benign": 10, "malicious": 0, "fp_rate": fp_rate, "recall": 0.0}
    return Figures(
        name,
        {"overall": {"fp_rate": fp_rate, "recall": recall}, "by_source": {"org/a": source}},
        {"fp_rate": 0.0, "recall": 1.0},
    )


def test_the_tables_have_a_column_per_model() -> None:
    lines = render_figures(
        [_figures("before", 0.2, 0.5), _figures("after 1", 0.1, 0.6), _figures("after 2", 0, 1)]
    )
    assert lines[0] == "| measure | before | after 1 | after 2 |"
    assert lines[2] == "| FP rate, held-out half | 20.00 % | 10.00 % | 0.00 % |"
    assert lines[3] == "| recall, held-out half | 50.00 % | 60.00 % | 100.00 % |"
    # A source without attacks has no recall to show.
    assert lines[-1] == "| org/a | 10 | 20.00 % | 10.00 % | 0.00 % | 0 | - | - | - |"
