"""Parser for the VNN-LIB 1.0 subset used by VNN-COMP benchmarks.

Supported: ``(declare-const X_i Real)`` / ``(declare-const Y_j Real)``; ``(assert E)`` where E is built from
``and``, ``or``, and comparisons ``<=``, ``>=``, ``<``, ``>`` between a variable and a number or two variables of
the same kind (X with constants only; Y with constants or other Y); ``;`` comments; ``.vnnlib.gz`` files.

The property describes the UNSAFE region: the answer is ``sat`` when some input satisfies it (a counterexample),
``unsat`` when none does. The conjunction of all asserts is expanded into a disjunction of terms; each term is an
input box plus output constraints ``C y <= d`` (all rows). Every input X_i must be bounded above and below in
every term. Input index i maps onto the network input in row-major (ONNX) order.
"""
from __future__ import annotations

import functools
import gc
import gzip
import itertools
import re
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np

from certkit.common.errors import CertkitError

_VAR = re.compile(r"^([XY])_(\d+)$")
#: the most disjuncts a property may expand to (VNN-COMP 2023 nn4sys lindex_60000 writes 120,000); a guard against
#: the exponential growth of and-of-or products, checked as they are expanded
_MAX_TERMS = 1_000_000


class VnnlibError(CertkitError):
    """A malformed or unsupported VNN-LIB file (message names the file and line)."""


@dataclass
class Term:
    """One disjunct: input box [x_L, x_U] (float64 and exact rationals) and output rows C y <= d.

    ``strict[j]`` marks rows written with < or > (for exact counterexample checks).
    """

    x_L: np.ndarray
    x_U: np.ndarray
    C: np.ndarray
    d: np.ndarray
    strict: np.ndarray
    x_L_exact: list = field(repr=False, default_factory=list)
    x_U_exact: list = field(repr=False, default_factory=list)

    def box_key(self) -> tuple[bytes, bytes]:
        """A hashable key of the input box: equal for disjuncts over the same box (which share attacks, root bounds
        and input-split searches)."""
        return self.x_L.tobytes(), self.x_U.tobytes()


@dataclass
class Property:
    """A parsed VNN-LIB property: sizes and the disjunction of terms of its unsafe region."""

    n_inputs: int
    n_outputs: int
    terms: list[Term]
    path: str = ""


#: a comparison of two plain operands, e.g. ``(<= X_3 0.5)``, read as one token (most of a large property's text)
_TOKEN = re.compile(r"\(\s*(<=|>=|<|>)\s+([^\s()]+)\s+([^\s()]+)\s*\)|([()]|[^\s()]+)")
_AND_START = re.compile(r"\s*\(\s*and\s")
_OPS = {"<=", ">=", "<", ">"}


class _AndAtoms:
    """The comparisons (op, a, b, "") of a one-line conjunction of comparisons, in order (one token)."""

    __slots__ = ("atoms",)

    def __init__(self, atoms: list):
        self.atoms = atoms

    def __repr__(self) -> str:
        return "(and ...)"


def _and_atoms(line: str) -> tuple[list, int] | None:
    """(the comparisons (op, a, b, "") in order, the number of ")" after the conjunction's own) when ``line`` (without
    its comment) is ``(and`` followed by comparisons of two plain operands and closing parentheses only, else None.
    Read with str.split and list slices instead of the tokenizer's regex and a loop per token."""
    toks = line.replace("(", " ( ").replace(")", " ) ").split()
    k = toks.count("(") - 1                         # the comparisons, if the line is of that form
    body, rest = toks[2:2 + 5 * k], toks[2 + 5 * k:]
    if (k < 1 or toks[0] != "(" or toks[1] != "and" or len(body) != 5 * k or body.count("(") != k
            or body.count(")") != k or body[0::5].count("(") != k or body[4::5].count(")") != k
            or not set(body[1::5]) <= _OPS or not rest or rest.count(")") != len(rest)):
        return None
    return list(zip(body[1::5], body[2::5], body[3::5], itertools.repeat(""))), len(rest) - 1


def _tokenize(text: str, path: str):
    """(token, line) pairs: "(", ")", symbols, the tuple (op, a, b, "") for a comparison of two plain operands, and
    an :class:`_AndAtoms` for a line that is a conjunction of such comparisons, ``(and (>= X_0 0.5) (<= X_0 1) ...
    (<= Y_0 -1e-5))`` (VNN-COMP nn4sys writes each of up to 11,080 disjuncts so, 617 comparisons each: one token
    instead of 619)."""
    tokens: list[tuple] = []
    append = tokens.append
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split(";", 1)[0]
        group = _and_atoms(line) if _AND_START.match(line) else None
        if group is not None:
            append((_AndAtoms(group[0]), lineno))
            tokens += [(")", lineno)] * group[1]
            continue
        for t in _TOKEN.findall(line):
            append((t[3], lineno) if t[3] else (t, lineno))
    return tokens


def _parse_sexprs(tokens, path):
    stack, top = [], []
    for tok, line in tokens:
        if tok == "(":
            stack.append(([], line))
        elif tok == ")":
            if not stack:
                raise VnnlibError(f"{path}:{line}: unbalanced ')'")
            items, start = stack.pop()
            node = (items, start)
            (stack[-1][0] if stack else top).append(node)
        else:
            (stack[-1][0] if stack else top).append((tok, line))
    if stack:
        raise VnnlibError(f"{path}:{stack[-1][1]}: '(' is never closed")
    return top


@functools.lru_cache(maxsize=65536)
def _num(tok: str):
    """The exact rational a numeral denotes, or None (cached: large properties repeat their constants)."""
    try:
        return Fraction(tok)
    except (ValueError, ZeroDivisionError):
        return None


@functools.lru_cache(maxsize=65536)
def _leaf(tok: str):
    """('X', i) / ('Y', j) / ('c', Fraction, its float) for a variable or a numeral, None for anything else
    (cached)."""
    m = _VAR.match(tok)
    if m:
        return (m.group(1), int(m.group(2)))
    v = _num(tok)
    return None if v is None else ("c", v, float(v))


class _Parser:
    def __init__(self, path: str):
        self.path = path
        self.x: set[int] = set()
        self.y: set[int] = set()
        self.parts: dict = {}     # id of a part of a disjunct -> (its input atoms, its output atoms, the part)
        self.boxes: dict = {}     # ids of the parts of a disjunct that bound inputs -> its box
        self.atoms: dict = {}     # (op, a, b, "") token -> (op, leaf a, leaf b, kind), checked once

    def err(self, line, msg):
        return VnnlibError(f"{self.path}:{line}: {msg}")

    def term(self, node):
        """A leaf: ('X', i) / ('Y', i) / ('c', Fraction, its float)."""
        tok, line = node
        if isinstance(tok, list):
            v = _num(tok[1][0]) if len(tok) == 2 and tok[0][0] == "-" and isinstance(tok[1][0], str) else None
            if v is not None:
                return ("c", -v, -float(v))  # (- 1.5)
            raise self.err(line, "only variables and numbers may be compared (no arithmetic expressions)")
        if not isinstance(tok, str):
            raise self.err(line, "only variables and numbers may be compared")
        return self.leaf(tok, line)

    def leaf(self, tok: str, line: int):
        v = _leaf(tok)
        if v is None:
            raise self.err(line, f"unknown symbol {tok!r}")
        if v[0] != "c" and v[1] not in (self.x if v[0] == "X" else self.y):
            raise self.err(line, f"{tok} is used but not declared")
        return v

    def atom(self, node):
        """(op, a, b, kind, bound) of a tokenizer atom node (((op, a, b, ""), line)); a comparison text seen before is
        reused, checked once (nn4sys repeats the same bounds in thousands of disjuncts)."""
        tok, line = node
        known = self.atoms.get(tok)
        if known is None:
            known = self.atoms[tok] = self.checked(tok[0], self.leaf(tok[1], line), self.leaf(tok[2], line), line)
        return known

    def checked(self, op: str, a: tuple, b: tuple, line: int) -> tuple:
        """(op, a, b, kind, bound): kind "X" for a bound on an input (a variable against a number), "Y" for a
        comparison of outputs and numbers; ``bound`` (upper?, input index, exact value, its float) for an input's
        bound (None for kind "Y"): c is an upper bound of X in X <= c, X < c, c >= X and c > X, a lower one in the
        others.

        Raises:
            VnnlibError: inputs and outputs mixed, only numbers, or two inputs compared (with the line)."""
        kinds = {a[0], b[0]} - {"c"}
        if len(kinds) != 1:
            raise self.err(line, "a comparison must involve X variables or Y variables (not both, not only numbers)")
        kind = kinds.pop()
        if kind == "X" and a[0] == b[0]:
            raise self.err(line, "comparisons between two inputs are not supported")
        if kind == "Y":
            return (op, a, b, kind, None)
        lo, hi = (b, a) if op in (">=", ">") else (a, b)      # lo <= hi
        return (op, a, b, kind, (True, lo[1], hi[1], hi[2]) if lo[0] == "X" else (False, hi[1], lo[1], lo[2]))

    def dnf(self, node) -> list[list]:
        """DNF of a boolean expression: a list of conjunctions, each a list of atoms (op, a, b, kind, bound)."""
        items, line = node
        if isinstance(items, tuple):                 # (op, a, b, "") from the tokenizer
            return [[self.atom(node)]]
        if isinstance(items, _AndAtoms):             # a one-line conjunction of comparisons
            atoms = list(map(self.atoms.get, items.atoms))
            if None in atoms:                         # comparisons not seen before: checked (and cached) once
                atoms = [a if a is not None else self.atom((t, line)) for a, t in zip(atoms, items.atoms)]
            return [atoms]
        if not isinstance(items, list) or not items:
            raise self.err(line, "expected an expression in parentheses")
        head = items[0][0]
        if not isinstance(head, str):
            raise self.err(line, "expected an operator (and, or, <=, >=, <, >) after '('")
        if head == "and":
            out: list[list] = [[]]
            pending: list = []                       # atoms since the last disjunctive conjunct, in order
            for sub in items[1:]:
                if isinstance(sub[0], tuple):        # an atom: no recursion (large boxes are thousands of them)
                    pending.append(self.atom(sub))
                    continue
                sub_dnf = self.dnf(sub)
                if len(sub_dnf) == 1:
                    pending += sub_dnf[0]
                    continue
                out = [a + pending + b for a in out for b in sub_dnf]
                pending = []
                if len(out) > _MAX_TERMS:
                    raise self.err(line, f"the property expands to more than {_MAX_TERMS} disjuncts")
            return [a + pending for a in out] if len(out) > 1 else [out[0] + pending]
        if head == "or":
            return [c for sub in items[1:] for c in self.dnf(sub)]
        if head in ("<=", ">=", "<", ">"):
            if len(items) != 3:
                raise self.err(line, f"({head} a b) takes exactly two arguments")
            return [[self.checked(head, self.term(items[1]), self.term(items[2]), line)]]
        raise self.err(line, f"unsupported operator {head!r} (VNN-LIB 1.0 subset: and, or, <=, >=, <, >)")

    def parse(self, text: str) -> Property:
        forms = _parse_sexprs(_tokenize(text, self.path), self.path)
        asserts = []
        for items, line in forms:
            if not isinstance(items, list) or not items:
                raise self.err(line, "expected (declare-const ...) or (assert ...)")
            head = items[0][0]
            if head == "declare-const":
                if len(items) != 3 or items[2][0] != "Real":
                    raise self.err(line, "declare-const takes a name and the sort Real")
                m = _VAR.match(items[1][0]) if isinstance(items[1][0], str) else None
                if not m:
                    raise self.err(line, f"variable names must be X_i or Y_j, got {items[1][0]!r}")
                (self.x if m.group(1) == "X" else self.y).add(int(m.group(2)))
            elif head == "assert":
                if len(items) != 2:
                    raise self.err(line, "assert takes one expression")
                asserts.append(items[1])
            else:
                raise self.err(line, f"unsupported command {head!r}")
        for kind, s in (("X", self.x), ("Y", self.y)):
            if not s:
                raise VnnlibError(f"{self.path}: no {kind}_ variables are declared")
            if s != set(range(len(s))):
                raise VnnlibError(f"{self.path}: {kind}_ variables must be numbered 0..{len(s) - 1}")
        if not asserts:
            raise VnnlibError(f"{self.path}: the file has no assert")
        # a disjunct is a tuple of parts, one conjunction of atoms per assert (parts are shared between disjuncts)
        # (consecutive asserts without a disjunction form one part: a box is often thousands of asserts)
        conj: list[tuple] = [()]
        pending: list = []
        for a in asserts:
            dnf = self.dnf(a)
            if len(dnf) == 1:
                pending += dnf[0]
                continue
            if pending:
                conj, pending = [c + (pending,) for c in conj], []
            conj = [c + (d,) for c in conj for d in dnf]
            if len(conj) > _MAX_TERMS:
                raise VnnlibError(f"{self.path}: the property expands to more than {_MAX_TERMS} disjuncts")
        if pending:
            conj = [c + (pending,) for c in conj]
        terms = [self.term_of(c) for c in conj]
        return Property(len(self.x), len(self.y), terms, self.path)

    def split(self, part: list) -> tuple[list, list]:
        """(input atoms, output atoms) of one part, computed once per part object."""
        key = id(part)
        if key not in self.parts:
            x_atoms = [atom for atom in part if atom[3] == "X"]
            y_atoms = [atom for atom in part if atom[3] == "Y"]
            self.parts[key] = (x_atoms, y_atoms, part)   # (the part is kept, so that its id stays unique)
        return self.parts[key][:2]

    def term_of(self, parts: tuple) -> Term:
        ny = len(self.y)
        rows, ds, strict = [], [], []
        split = [self.split(part) for part in parts]
        # disjuncts share the parts that bound the inputs (the same objects): their box is built once
        key = tuple(id(part) for part, (xa, _) in zip(parts, split) if xa)
        if key not in self.boxes:
            self.boxes[key] = self.box_of([atom for xa, _ in split for atom in xa])
        x_L, x_U, lo, hi = self.boxes[key]
        for op, a, b, _kind, _ in (atom for _, ya in split for atom in ya):
            if op in (">=", ">"):
                a, b = b, a                                  # normalise to a <= b
            row, d = np.zeros(ny), Fraction(0)
            for sign, t in ((1, a), (-1, b)):
                if t[0] == "Y":
                    row[t[1]] += sign
                else:
                    d -= sign * t[1]
            rows.append(row)
            ds.append(float(d))
            strict.append(op in ("<", ">"))
        return Term(x_L, x_U, np.array(rows).reshape(len(rows), ny), np.array(ds), np.array(strict, dtype=bool),
                    lo, hi)

    def box_of(self, x_atoms) -> tuple:
        """(x_L, x_U float64 arrays, lo, hi exact lists) of the input comparisons ``x_atoms``."""
        nx = len(self.x)
        lo: list = [None] * nx
        hi: list = [None] * nx
        lo_f, hi_f = [0.0] * nx, [0.0] * nx
        for atom in x_atoms:                            # (checked: one input against a number)
            upper, i, v, f = atom[4]
            if upper:
                if hi[i] is None or v < hi[i]:
                    hi[i], hi_f[i] = v, f
            elif lo[i] is None or v > lo[i]:
                lo[i], lo_f[i] = v, f
        missing = [i for i in range(nx) if lo[i] is None or hi[i] is None]
        if missing:
            raise VnnlibError(f"{self.path}: input X_{missing[0]} lacks a lower or upper bound in a disjunct")
        x_L, x_U = np.array(lo_f), np.array(hi_f)
        # exact comparison only where the rounded bounds do not order them (float() is monotone) and the two are not
        # the same numeral
        empty = [i for i in np.flatnonzero(x_L >= x_U).tolist() if lo[i] is not hi[i] and lo[i] > hi[i]]
        if empty:
            raise VnnlibError(f"{self.path}: input X_{empty[0]} has lower bound > upper bound")
        return x_L, x_U, lo, hi


def parse_vnnlib(path: str | Path) -> Property:
    """Parse a ``.vnnlib`` (or ``.vnnlib.gz``) file.

    Raises:
        VnnlibError (a CertkitError): unreadable file, syntax error or unsupported construct, with its line.
    """
    path = Path(path)
    try:
        raw = gzip.open(path, "rt").read() if path.suffix == ".gz" else path.read_text()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise VnnlibError(f"cannot read {path}: {e}") from None
    return parse_vnnlib_text(raw, str(path))


def parse_vnnlib_text(text: str, name: str = "<string>") -> Property:
    """Parse VNN-LIB text (see :func:`parse_vnnlib`)."""
    collecting = gc.isenabled()
    gc.disable()        # millions of tokens and no cycles: the collector's passes over them took 30% of the time
    try:
        return _Parser(name).parse(text)
    finally:
        if collecting:
            gc.enable()


# ------------------------------------------------------------------ writing
def exact_decimal(v: float) -> str:
    """The exact decimal expansion of a binary float (no exponent), e.g. float32(0.1) ->
    0.100000001490116119384765625."""
    s = format(Decimal(float(v)), "f")
    return "0.0" if s in ("0", "-0") else s


def vnnlib_text(lo: np.ndarray, hi: np.ndarray, y: int, n_outputs: int) -> str:
    """VNN-LIB 1.0 text: box lo <= X <= hi (flat, row-major) and the unsafe region OR_{j != y} (Y_j >= Y_y); float64
    bounds are written exactly, others as float32."""
    keep = lambda a: np.asarray(a) if np.asarray(a).dtype == np.float64 else np.asarray(a, dtype=np.float32)  # noqa: E731
    lo, hi = keep(lo).ravel(), keep(hi).ravel()
    lines = [f"; Linf box with {lo.size} inputs; unsafe: some class other than {y} scores at least as high as {y}"]
    lines += [f"(declare-const X_{i} Real)" for i in range(lo.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_outputs)]
    for i in range(lo.size):
        lines.append(f"(assert (>= X_{i} {exact_decimal(lo[i])}))")
        lines.append(f"(assert (<= X_{i} {exact_decimal(hi[i])}))")
    terms = " ".join(f"(and (>= Y_{j} Y_{y}))" for j in range(n_outputs) if j != y)
    lines.append(f"(assert (or {terms}))")
    return "\n".join(lines) + "\n"
