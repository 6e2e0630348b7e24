"""VNN-LIB 1.0 parser: the forms VNN-COMP uses, and line-numbered errors for malformed files."""
import gzip
import math

import numpy as np
import pytest

from certkit.verifiers.complete.vnnlib import VnnlibError, parse_vnnlib, parse_vnnlib_text

from conftest import DATA

VNN = DATA / "vnncomp2021"


def test_real_acas_properties():
    p1 = parse_vnnlib(VNN / "prop_1.vnnlib")
    assert (p1.n_inputs, p1.n_outputs, len(p1.terms)) == (5, 5, 1)
    t = p1.terms[0]
    # prop 1: unsafe iff Y_0 >= 3.991125645861615  <=>  -Y_0 <= -3.99...
    assert t.C.tolist() == [[-1.0, 0, 0, 0, 0]] and t.d[0] == pytest.approx(-3.991125645861615)
    assert t.x_L[0] == pytest.approx(0.6) and t.x_U[0] == pytest.approx(0.679857769)
    p3 = parse_vnnlib(VNN / "prop_3.vnnlib")  # unsafe iff Y_0 <= Y_j for every j: rows Y_0 - Y_j <= 0
    assert p3.terms[0].C.tolist() == [[1, -1, 0, 0, 0], [1, 0, -1, 0, 0], [1, 0, 0, -1, 0], [1, 0, 0, 0, -1]]
    p6 = parse_vnnlib(VNN / "prop_6.vnnlib")  # 2 input boxes x 4 output disjuncts
    assert len(p6.terms) == 8
    assert {(round(t.x_L[1], 6), round(t.x_U[1], 6)) for t in p6.terms} == {(0.111408, 0.5), (-0.5, -0.111408)}
    p7 = parse_vnnlib(VNN / "prop_7.vnnlib")
    assert len(p7.terms) == 2 and all(t.C.shape == (3, 5) for t in p7.terms)


def test_constants_both_sides_strict_and_gz(tmp_path):
    text = """
    ; a comment
    (declare-const X_0 Real) (declare-const X_1 Real)
    (declare-const Y_0 Real) (declare-const Y_1 Real)
    (assert (<= X_0 1.5)) (assert (>= X_0 -2e-1))
    (assert (<= -1 X_1)) (assert (>= 0.25 X_1))
    (assert (or (and (< Y_0 Y_1) (>= Y_0 3)) (and (> 0.5 Y_1))))
    """
    p = parse_vnnlib_text(text)
    assert np.allclose(p.terms[0].x_L, [-0.2, -1]) and np.allclose(p.terms[0].x_U, [1.5, 0.25])
    a, b = p.terms
    assert a.C.tolist() == [[1, -1], [-1, 0]] and a.d.tolist() == [0, -3] and a.strict.tolist() == [True, False]
    assert b.C.tolist() == [[0, 1]] and b.d.tolist() == [0.5] and b.strict.tolist() == [True]
    gz = tmp_path / "p.vnnlib.gz"
    with gzip.open(gz, "wt") as f:
        f.write(text)
    assert len(parse_vnnlib(gz).terms) == 2


@pytest.mark.parametrize("text,line,words", [
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1)\n", 3, "never closed"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
     "(assert (<= Y_0 Z_9))\n", 5, "unknown symbol"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
     "(assert (<= (+ Y_0 Y_0) 1))\n", 5, "arithmetic"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
     "(assert (<= Y_0 X_0))\n", 5, "not both"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
     "(assert (or (<= Y_0 1) (<= 1 2)))\n", 5, "not only numbers"),
    ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n"
     "(assert (>= X_0 0))\n(assert (<= X_0 X_1))\n", 6, "two inputs"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
     "(assert (xor (<= Y_0 1)))\n", 5, "unsupported operator"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Int)\n", 2, "Real"),
    ("(declare-const X_0 Real)\n(declare-const (<= Y_0 1) Real)\n", 2, "X_i or Y_j"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
     "(assert (or ((<= Y_0 1))))\n", 5, "expected an operator"),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
     "(assert (and (<= Y_0 1) (<= Y_3 1)))\n", 5, "Y_3 is used but not declared"),
])
def test_malformed_files_have_line_numbers(text, line, words):
    with pytest.raises(VnnlibError) as e:
        parse_vnnlib_text(text, "bad.vnnlib")
    assert f"bad.vnnlib:{line}:" in str(e.value) and words in str(e.value)


def test_missing_bounds_and_unreadable(tmp_path):
    with pytest.raises(VnnlibError, match="X_0 lacks"):
        parse_vnnlib_text("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (<= Y_0 0))")
    with pytest.raises(VnnlibError, match="cannot read"):
        parse_vnnlib(tmp_path / "missing.vnnlib")


def test_one_line_comparisons_and_split_ones_parse_alike():
    """Comparisons on one line are read by the tokenizer as whole atoms (the fast path for large properties); the
    same property with its comparisons split over lines and negated constants takes the general path: the terms,
    rows in order included, must be equal."""
    fast = """(declare-const X_0 Real) (declare-const X_1 Real) (declare-const Y_0 Real) (declare-const Y_1 Real)
    (assert (or (and (>= X_0 -1.5) (<= X_0 1) (>= X_1 0) (<= X_1 0.25))
                (and (>= X_0 2) (<= X_0 3) (>= X_1 -2) (<= X_1 -1))))
    (assert (and (<= Y_0 1) (or (<= Y_1 2) (>= Y_1 3)) (<= Y_0 Y_1)))
    """
    slow = """(declare-const X_0 Real) (declare-const X_1 Real) (declare-const Y_0 Real) (declare-const Y_1 Real)
    (assert (or (and (>= X_0 (- 1.5)) (<=
      X_0 1) (>= X_1 0) (<= X_1 0.25)) (and (>= X_0 2) (<= X_0 3) (>= X_1 (- 2)) (<= X_1 (- 1)))))
    (assert (and (<=
      Y_0 1) (or (<= Y_1 2) (>=
      Y_1 3)) (<= Y_0
      Y_1)))
    """
    a, b = parse_vnnlib_text(fast), parse_vnnlib_text(slow)
    assert len(a.terms) == len(b.terms) == 4
    for s, t in zip(a.terms, b.terms):
        for f in ("x_L", "x_U", "C", "d", "strict"):
            assert np.array_equal(getattr(s, f), getattr(t, f)), f
    assert a.terms[0].C.tolist() == [[1, 0], [0, 1], [1, -1]] and a.terms[0].d.tolist() == [1, 2, 0]
    assert a.terms[1].C.tolist() == [[1, 0], [0, -1], [1, -1]] and a.terms[1].d.tolist() == [1, -3, 0]
    assert a.terms[0].x_L.tolist() == [-1.5, 0] and a.terms[3].x_U.tolist() == [3, -1]


def test_boxes_built_from_asserts_on_either_side_of_a_disjunction():
    """Input bounds before, inside and after a disjunction all bound each disjunct's box (the tightest wins), and the
    disjuncts whose input atoms are the same share one box (the same arrays): the boxes are checked against the
    intersection of each disjunct's bounds written out by hand."""
    text = """(declare-const X_0 Real) (declare-const X_1 Real) (declare-const Y_0 Real) (declare-const Y_1 Real)
    (assert (>= X_0 -2)) (assert (<= X_1 5))
    (assert (or (and (<= X_0 1) (<= Y_0 0)) (and (<= X_0 0.5) (>= X_1 -1) (<= Y_1 0))))
    (assert (<= X_0 3)) (assert (>= X_1 -4))
    (assert (or (<= Y_0 Y_1) (>= Y_0 7)))
    """
    p = parse_vnnlib_text(text)
    assert len(p.terms) == 4
    want = [([-2, -4], [1, 5]), ([-2, -4], [1, 5]), ([-2, -1], [0.5, 5]), ([-2, -1], [0.5, 5])]
    for t, (lo, hi) in zip(p.terms, want):
        assert t.x_L.tolist() == lo and t.x_U.tolist() == hi
    assert p.terms[0].x_L is p.terms[1].x_L and p.terms[0].x_L is not p.terms[2].x_L
    assert [t.C.tolist() for t in p.terms] == [[[1, 0], [1, -1]], [[1, 0], [-1, 0]], [[0, 1], [1, -1]],
                                               [[0, 1], [-1, 0]]]


def _random_property(rng, n_x=3, n_y=3, disjuncts=6):
    """VNN-LIB text of a disjunction of one-line conjunctions (input bounds written either way round, with <, <=,
    >, >=, numerals of several spellings; output rows against constants or other outputs), and the same text with a
    line break after each "(and", which the tokenizer reads comparison by comparison."""
    def num(v, up=True):
        return rng.choice([f"{v}", f"{v:.3e}", f"{v:.6f}", f"{math.ceil(v) if up else math.floor(v)}"])

    def bound(i, lo, hi, upper):                            # (rounded outwards: the box stays non-empty)
        c = num(hi + 1e-3, True) if upper else num(lo - 1e-3, False)
        op = rng.choice(["<=", "<"]) if upper else rng.choice([">=", ">"])
        flipped = {"<=": ">=", "<": ">", ">=": "<=", ">": "<"}[op]
        return f"({op} X_{i} {c})" if rng.random() < 0.5 else f"({flipped} {c} X_{i})"

    lines = [f"(declare-const X_{i} Real)" for i in range(n_x)] + [f"(declare-const Y_{j} Real)" for j in range(n_y)]
    lines.append("(assert (or")
    for _ in range(disjuncts):
        atoms = []
        for i in range(n_x):
            lo = float(rng.uniform(-2, 0))
            hi = lo + float(rng.uniform(0, 3))
            atoms += [bound(i, lo, hi, True), bound(i, lo, hi, False)]
            if rng.random() < 0.3:                          # a second, looser or tighter, bound on one side
                atoms.append(bound(i, lo, rng.uniform(lo + 0.01, hi + 0.5), True))
        for _ in range(int(rng.integers(1, 3))):
            j, k = rng.choice(n_y, 2, replace=False)
            atoms.append(rng.choice([f"(<= Y_{j} {num(float(rng.normal()))})", f"(> Y_{j} Y_{k})",
                                     f"(>= {num(float(rng.normal()))} Y_{k})"]))
        rng.shuffle(atoms)
        lines.append("  (and " + " ".join(atoms) + ")")
    lines[-1] += "))"
    fast = "\n".join(lines) + "\n"
    return fast, fast.replace("(and ", "(and\n")


def test_one_line_conjunctions_read_whole_parse_as_comparison_by_comparison():
    """Lines that are a conjunction of comparisons are read as one token (the fast path of properties with
    thousands of such disjuncts); the same properties with a line break after each "(and" are read comparison by
    comparison: every term (boxes, exact bounds, rows, strictness) must be equal, over random properties."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        fast, slow = _random_property(rng)
        a, b = parse_vnnlib_text(fast), parse_vnnlib_text(slow)
        assert len(a.terms) == len(b.terms) == 6
        for s, t in zip(a.terms, b.terms):
            for f in ("x_L", "x_U", "C", "d", "strict"):
                assert np.array_equal(getattr(s, f), getattr(t, f)), f
            assert s.x_L_exact == t.x_L_exact and s.x_U_exact == t.x_U_exact


@pytest.mark.parametrize("line,lineno,words", [
    ("(and (<= X_0 1) (>= X_0 0) junk (<= Y_0 0))", 4, "expected an expression"),  # a stray symbol in the and
    ("(and (<= X_0 1) (>= X_0 0) (<= Y_0 0)) (<= Y_0 Z_1)", 4, "unknown symbol"),  # more after the conjunction
    ("(and (<= X_0 1) (>= X_0 0) (<= Y_0 Z_1))", 4, "unknown symbol"),
    ("(and (<= X_0 1) (>= X_0 0) (<= Y_0 0)) junk", 4, "expected an expression"),   # a symbol after it
    ("(and (<= X_0 1) (>= X_0 0) (<= Y_0 ) ) )", 5, "unbalanced"),                  # a parenthesis as an operand
])
def test_lines_that_only_look_like_conjunctions_keep_the_general_errors(line, lineno, words):
    text = f"(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (or\n{line}\n))\n"
    with pytest.raises(VnnlibError) as e:
        parse_vnnlib_text(text, "bad.vnnlib")
    assert f"bad.vnnlib:{lineno}:" in str(e.value) and words in str(e.value)
