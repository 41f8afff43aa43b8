"""The five-way cross-language check of issue 19, part 4 (Python): opens each model that
cross_language_make saved and compares Model.log_prob, on C- and Fortran-ordered arrays, with the
log-densities the C++ template code gave (file formats in tests/cross_language/make_models.cpp).

Usage: python3 check.py <directory> <name> [<name> ...]
"""
import os
import sys

import numpy as np

import nflow


def check(directory, name):
    with open(os.path.join(directory, name + ".points.txt")) as f:
        n, d, c = (int(v) for v in f.readline().split())
        table = np.loadtxt(f, ndmin=2)
    want = np.loadtxt(os.path.join(directory, name + ".log_prob.txt"), ndmin=1)
    if table.shape != (n, d + c) or want.shape != (n,):
        print(f"FAIL {name}: malformed points or log_prob file")
        return 1
    x, context = table[:, :d], (table[:, d:] if c else None)
    model = nflow.Model.open(os.path.join(directory, name + ".safetensors"), dtype=np.float64)
    failures = 0
    for order in ("C", "F"):
        xo = np.asarray(x, order=order)
        co = None if context is None else np.asarray(context, order=order)
        got = model.log_prob(xo, co)
        worst = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))
        ok = bool(np.all(np.isfinite(got))) and worst <= 1e-12
        print(f"{'ok  ' if ok else 'FAIL'} {name} ({order}-ordered): max relative difference {worst:g}")
        failures += 0 if ok else 1
    return failures


def main(argv):
    if len(argv) < 3:
        print("usage: check.py <directory> <name>...", file=sys.stderr)
        return 2
    return 1 if sum(check(argv[1], name) for name in argv[2:]) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
