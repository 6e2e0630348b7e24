"""bench/vnncomp_compare.py finds every tool's answers on a benchmark in a VNN-COMP results repository checkout
(the 2022-2024 TOOL/[YEAR_]BENCH/results.csv layout and the 2021 results_csv/TOOL.csv one)."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "vnncomp_compare.py"


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("vnncomp_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


def test_each_tool_with_answers_on_the_benchmark_is_found(runner, tmp_path):
    row = "lsnc,b/lsnc/onnx/net.onnx,b/lsnc/vnnlib/p{}.vnnlib,1.0,{},{}"
    write(tmp_path / "alpha_beta_crown" / "2024_lsnc" / "results.csv", [row.format(0, "unsat", 2.5)])
    write(tmp_path / "nnenum" / "2024_lsnc" / "results.csv", [row.format(0, "timeout", 30), row.format(1, "sat", 1)])
    write(tmp_path / "marabou" / "lsnc" / "results.csv", [row.format(1, "violated", 4.0)])       # 2022 layout
    write(tmp_path / "pyrat" / "2024_lsnc_big" / "results.csv", [row.format(0, "unsat", 1.0)])   # another benchmark
    write(tmp_path / "neuralsat" / "2024_lsnc" / "results.csv", [])                              # no answers
    write(tmp_path / "results_csv" / "a-b-CROWN.csv",                                            # 2021 layout
          [row.format(2, "holds", 7.0), "acasxu,b/acasxu/net.onnx,b/acasxu/p2.vnnlib,1.0,sat,0.5"])
    found = runner.discover_references(tmp_path, "lsnc")
    assert set(found) == {"alpha_beta_crown", "nnenum", "marabou", "a-b-CROWN"}
    assert found["alpha_beta_crown"] == {("net.onnx", "p0.vnnlib"): ("unsat", 2.5)}
    assert found["nnenum"][("net.onnx", "p1.vnnlib")] == ("sat", 1.0)
    assert found["nnenum"][("net.onnx", "p0.vnnlib")][0] == "other"
    assert found["marabou"] == {("net.onnx", "p1.vnnlib"): ("sat", 4.0)}
    assert found["a-b-CROWN"] == {("net.onnx", "p2.vnnlib"): ("unsat", 7.0)}   # the acasxu row left out
    assert runner.discover_references(tmp_path, "cgan") == {}


def test_a_reference_of_another_benchmark_name_is_reported(runner, tmp_path):
    """Answers are matched by file names: the benchmark names of the matching rows are returned, so that a results
    CSV of another year's property set with the same file names can be pointed out."""
    path = tmp_path / "a-b-CROWN.csv"
    write(path, ["mnistfc,./benchmarks/mnistfc/net.onnx,./benchmarks/mnistfc/prop_1.vnnlib,1.0,holds,3.0",
                 "acasxu,./benchmarks/acasxu/a.onnx,./benchmarks/acasxu/prop_1.vnnlib,1.0,holds,1.0"])
    assert runner.reference_categories(path, {("net.onnx", "prop_1.vnnlib")}) == {"mnistfc"}
    assert runner.reference_categories(path, {("b.onnx", "prop_1.vnnlib")}) == set()


def test_a_wrong_answer_says_which_tools_agree_with_certkit(runner, tmp_path, monkeypatch, capsys):
    """certkit unsat where one tool claims sat is WRONG; the line names the tools that answered unsat and the count
    says how many such answers another tool agrees with (VNN-COMP 2021's results hold no counterexamples). The
    answers come from a resumed --out file, so nothing is verified."""
    bench = tmp_path / "eran"
    write(bench / "eran_instances.csv", ["net.onnx,p1.vnnlib,30", "net.onnx,p2.vnnlib,30"])
    out = tmp_path / "answers.csv"
    write(out, ["eran,net.onnx,p1.vnnlib,unsat,1.0,CROWN,0", "eran,net.onnx,p2.vnnlib,unsat,1.0,CROWN,0"])
    row = "eran,./benchmarks/eran/net.onnx,./benchmarks/eran/{},1.0,{},2.0"
    write(tmp_path / "results_csv" / "Debona.csv", [row.format("p1.vnnlib", "sat"), row.format("p2.vnnlib", "sat")])
    write(tmp_path / "results_csv" / "VeriNet.csv", [row.format("p1.vnnlib", "holds")])
    monkeypatch.setattr("sys.argv", ["vnncomp_compare.py", str(bench), "--results", str(tmp_path), "--out", str(out)])
    runner.main()
    text = capsys.readouterr().out
    assert "WRONG 2 (1 of them unsat per another tool)" in text
    assert "WRONG net.onnx p1.vnnlib: certkit unsat, Debona sat (unsat per VeriNet)" in text
    assert "WRONG net.onnx p2.vnnlib: certkit unsat, Debona sat\n" in text
