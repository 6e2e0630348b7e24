"""common/results.py: append-only TSVs that never lose or mix rows, and read back exactly what was written."""
import json

import pytest

from certkit.common.errors import CertkitError
from certkit.common.results import ResultWriter

COLS = ("idx", "label", "radius")


def test_rows_round_trip_exactly_and_resume_skips_them(tmp_path):
    path = tmp_path / "r.tsv"
    radius = 0.1 + 0.2                                   # 0.30000000000000004: must not be rounded to 0.3
    with ResultWriter(path, {"sigma": 0.25}, COLS) as w:
        w.write({"idx": 0, "label": 3, "radius": radius})
        w.write({"idx": 4, "label": 1, "radius": 0.0, "extra": "ignored"})
    assert path.read_text().splitlines()[0] == "idx\tlabel\tradius"
    assert json.loads((tmp_path / "r.tsv.config.json").read_text()) == {"sigma": 0.25}
    with ResultWriter(path, {"sigma": 0.25}, COLS, resume=True) as w:
        assert w.done == {0, 4}
        assert w.rows[0] == {"idx": 0, "label": 3, "radius": radius} and w.rows[0]["radius"] != 0.3
        w.write({"idx": 5, "label": 2, "radius": 1.5})
    assert len(path.read_text().splitlines()) == 4


def test_existing_files_are_never_replaced_or_mixed(tmp_path):
    path = tmp_path / "r.tsv"
    ResultWriter(path, {"sigma": 0.25}, COLS).close()
    with pytest.raises(CertkitError, match="--resume"):
        ResultWriter(path, {"sigma": 0.25}, COLS)
    with pytest.raises(CertkitError, match="different settings.*sigma"):
        ResultWriter(path, {"sigma": 0.5}, COLS, resume=True)
    with pytest.raises(CertkitError, match="header"):
        ResultWriter(path, {"sigma": 0.25}, ("idx", "other"), resume=True)
    with ResultWriter(path, {"sigma": 0.5}, COLS, overwrite=True) as w:
        assert w.done == set()
    with pytest.raises(CertkitError, match="directory"):
        ResultWriter(tmp_path, {}, COLS)


def test_a_torn_last_row_is_dropped_on_resume(tmp_path):
    path = tmp_path / "r.tsv"
    with ResultWriter(path, {}, COLS) as w:
        w.write({"idx": 0, "label": 1, "radius": 0.5})
    with open(path, "a") as f:
        f.write("1\t2\t0.2")                              # no newline: the write was interrupted
    with ResultWriter(path, {}, COLS, resume=True) as w:
        assert w.done == {0}
    assert path.read_text() == "idx\tlabel\tradius\n0\t1\t0.5\n"


def test_a_second_writer_of_the_same_file_is_refused(tmp_path):
    path = tmp_path / "r.tsv"
    with ResultWriter(path, {}, COLS):
        with pytest.raises(CertkitError):
            ResultWriter(path, {}, COLS, resume=True)


def test_summaries_are_valid_json_with_nan_as_null(tmp_path):
    from certkit.common.results import json_text
    from certkit.runs.config import RunConfig, write_summary

    summary = {"a": float("nan"), "b": [1.0, float("inf"), {"c": -float("inf")}], "d": (2, 3), "e": "x"}
    path = write_summary(summary, RunConfig(out=str(tmp_path / "r.tsv")))
    text = open(path).read()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}")) == {
        "a": None, "b": [1.0, None, {"c": None}], "d": [2, 3], "e": "x"}
    assert json_text({"x": 0.1}) == '{\n  "x": 0.1\n}\n'
