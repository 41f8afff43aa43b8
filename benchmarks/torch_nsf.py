#!/usr/bin/env python3
"""PyTorch reference neural spline flows: the performance anchor of nflow's spline flows.

Two models, in plain vectorised PyTorch, with the conventions of the shared reference flows
(../shared/bench/flows.py: 2-hidden-layer ReLU MLPs of width H, nn.Linear initialisation with the
biases redrawn from N(0, 0.1²), seed 1000·seed + d, standard normal base):

* "NSF": 8 rational-quadratic spline couplings (Durkan et al. 2019, arXiv:1906.04032). Layer k
  transforms the second half x[d//2:] given the first (k even) or, with the mask flipped, the
  first half x[:d//2] given the second (k odd): nflow's CouplingMask::half(d, k % 2 == 1).
  Conditioner MLP(|A| -> H -> H -> (3K-1)·|B|).
* "NSF-AR": 5 autoregressive spline layers (the MAF comparison's count), each a MADE
  (Germain et al. 2015) over the natural order (k even) or the reversed order (k odd), hidden
  degrees cycling 1 … d-1 and stored in ascending order (as nflow's nn::MADE stores them: the
  same network up to a permutation of hidden units), masks applied as weight * mask on each call.
  Sampling is d passes per layer.

The spline is nflow's RationalQuadraticSpline<Scalar, K = 8, Unbounded> (spline_spec of issue 16),
written here from its formulas. For one feature with raw parameters (u, v, r) — K raw widths, K
raw heights, K-1 raw interior derivatives, the P = 3K-1 outputs i·P … i·P + P-1 of the
conditioner for feature i (nflow's layout is blocked, p·n + i: nflow_parameters() permutes):

    w_k = span·(m_w + (1 - K·m_w)·softmax(u)_k),  h_k likewise from v,  span = upper - lower
    X_0 = lower, X_k = lower + Σ_{j<k} w_j, X_K = upper (exactly);  Y likewise
    d_k = m_d + softplus(r_k + c0), c0 = log(expm1(1 - m_d)) (interior knots);  d_0 = d_K = 1
    in bin k: s = h_k/w_k, ξ = (x - X_k)/w_k, t = ξ(1 - ξ),
              y = Y_k + h_k (s ξ² + d_k t) / (s + (d_k + d_{k+1} - 2s) t)
              dy/dx = s² (d_{k+1} ξ² + 2 s t + d_k (1 - ξ)²) / (s + (d_k + d_{k+1} - 2s) t)²
    outside [lower, upper] = [-5, 5]: the identity (log-det 0).

The inverse solves the quadratic a ξ² + b ξ + c = 0 of the bin that holds y with the stable root
ξ = 2c / (-b - sqrt(b² - 4ac)) (Durkan et al. 2019, appendix A).

Benchmarks: this file registers "NSF" and "NSF-AR" into the shared scripts and runs one of them
(benchmarks/compare.py does this):

    /usr/bin/python3 benchmarks/torch_nsf.py --bench-dir ../shared/bench bench_torch.py \\
        --models NSF,NSF-AR --dims 2,16 --threads 1 --dtype float32 --out torch.jsonl

The other arguments are those of the shared script (bench_torch.py or bench_train.py).
"""
import argparse
import importlib
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

LOG2PI = math.log(2.0 * math.pi)
BINS = 8
LOWER, UPPER = -5.0, 5.0
MIN_BIN_WIDTH = MIN_BIN_HEIGHT = MIN_DERIVATIVE = 1e-3
PARAMS_PER_DIM = 3 * BINS - 1  # Unbounded: K widths, K heights, K - 1 interior derivatives
HIDDEN = {2: 64, 16: 128, 64: 256}
N_COUPLINGS = 8
N_AUTOREGRESSIVE = 5
# Large batches where 65,536 samples would take seconds per call (throughput is saturated long
# before); NSF-AR samples with d passes per layer. benchmarks/compare/nsf*.cpp use the same sizes.
LARGE_LOGPROB = {("NSF", 64): 16384, ("NSF-AR", 64): 16384}
LARGE_SAMPLE = {("NSF", 64): 16384, ("NSF-AR", 16): 4096, ("NSF-AR", 64): 512}


# ------------------------------------------------------------------------------------ the spline
# Implementation notes (speed: PyTorch costs a few µs per operation, so the number of operations
# per layer is what one point costs). The conditioner's output is stored feature-major here
# (output i·P + p; nflow's blocked row p·n + i: nflow_parameters() permutes), so each feature's
# P raw parameters are contiguous. Widths and heights share one softmax and one cumsum (the
# minimum bin width and height are equal); knots and derivatives form one table per feature,
# [X_0 … X_K, Y_0 … Y_K, d_0 … d_K], from which one gather takes the six quantities of the bin
# (the bin index is the number of interior knots <= the input, a sum of K-1 comparisons). The bin
# width is taken as X_{k+1} - X_k, equal to w_k up to rounding.
_SPAN = UPPER - LOWER
# Gather offsets of X_k, X_{k+1}, Y_k, Y_{k+1}, d_k, d_{k+1} from the bin index k.
_OFFSETS = torch.tensor([0, 1, BINS + 1, BINS + 2, 2 * BINS + 2, 2 * BINS + 3])
_ENDS = {}  # dtype -> [lower, …, lower, upper] (K + 1 entries), added to the padded cumsum


def derivative(r):
    """Interior knot derivatives from raw ones, as nflow: 1 + (1 - m_d)(softplus(r) - log 2)/log 2
    (= m_d + (1 - m_d) softplus(r)/log 2; exactly 1 at r = 0, m_d as r -> -inf)."""
    return 1.0 + (1.0 - MIN_DERIVATIVE) / math.log(2.0) * (F.softplus(r) - math.log(2.0))


def _table(raw, n):
    """Feature-major raw parameters (N, n·(3K-1)) -> (N, n, 3(K+1)): X_0..X_K, Y_0..Y_K, d_0..d_K."""
    p = raw.view(raw.shape[0], n, PARAMS_PER_DIM)
    sizes = torch.softmax(p[..., :2 * BINS].view(raw.shape[0], n, 2, BINS), -1)
    sizes = sizes * (_SPAN * (1.0 - BINS * MIN_BIN_WIDTH)) + _SPAN * MIN_BIN_WIDTH
    ends = _ENDS.get(raw.dtype)
    if ends is None:
        ends = _ENDS[raw.dtype] = torch.tensor([LOWER] * BINS + [UPPER], dtype=raw.dtype)
    knots = F.pad(torch.cumsum(sizes[..., :-1], -1), (1, 1)) + ends  # X_K = upper exactly
    d = F.pad(derivative(p[..., 2 * BINS:]), (1, 1), value=1.0)  # d_0 = d_K = 1
    return torch.cat([knots.view(raw.shape[0], n, 2 * (BINS + 1)), d], -1)


def _in_bin(table, v, row):
    """X_k, X_{k+1}, Y_k, Y_{k+1}, d_k, d_{k+1} of the bin holding v (in [lower, upper]), the
    bin found among the X knots (row 0) or the Y knots (row 1)."""
    first = row * (BINS + 1)
    k = (v.unsqueeze(-1) >= table[..., first + 1:first + BINS]).sum(-1, keepdim=True)
    return table.gather(-1, k + _OFFSETS).unbind(-1)


def _log_slope(s, xi, t, den, dk, dk1):
    """log dy/dx = log(s² (d_{k+1} ξ² + 2 s t + d_k (1-ξ)²) / den²)."""
    one_m = 1.0 - xi
    return torch.log(s * s * (dk1 * xi * xi + 2.0 * s * t + dk * one_m * one_m) / (den * den))


def rq_forward(x, raw):
    """y = spline(x) and log|dy/dx| summed over features; x (N, n), raw (N, n·(3K-1))."""
    table = _table(raw, x.shape[1])
    xc = x.clamp(LOWER, UPPER)
    x0, x1, y0, y1, dk, dk1 = _in_bin(table, xc, 0)
    w, h = x1 - x0, y1 - y0
    s = h / w
    xi = (xc - x0) / w
    t = xi * (1.0 - xi)
    den = s + (dk + dk1 - 2.0 * s) * t
    y = y0 + h * (s * xi * xi + dk * t) / den
    inside = xc == x
    ld = torch.where(inside, _log_slope(s, xi, t, den, dk, dk1), 0.0)
    return torch.where(inside, y, x), ld.sum(-1)


def rq_inverse(y, raw, with_log_det=False):
    """x = spline⁻¹(y) (and log|dx/dy| summed over features when asked)."""
    table = _table(raw, y.shape[1])
    yc = y.clamp(LOWER, UPPER)
    x0, x1, y0, y1, dk, dk1 = _in_bin(table, yc, 1)
    w, h = x1 - x0, y1 - y0
    s = h / w
    dy = yc - y0
    c2 = (dk + dk1 - 2.0 * s) * dy
    a = h * (s - dk) + c2
    b = h * dk - c2
    c = -s * dy
    xi = (2.0 * c / (-b - torch.sqrt((b * b - 4.0 * a * c).clamp_min(0.0)))).clamp(0.0, 1.0)
    inside = yc == y
    x = torch.where(inside, x0 + xi * w, y)
    if not with_log_det:
        return x
    t = xi * (1.0 - xi)
    den = s + (dk + dk1 - 2.0 * s) * t
    ld = torch.where(inside, -_log_slope(s, xi, t, den, dk, dk1), 0.0)
    return x, ld.sum(-1)


# ------------------------------------------------------------------------------------ the flows
def std_normal_logp(z):
    return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * LOG2PI


def mlp(din, h, dout):
    return nn.Sequential(nn.Linear(din, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, dout))


class Flow(nn.Module):
    """forward(x) -> (z, log-det) (data -> latent), inverse(z) -> x; standard normal base."""

    def __init__(self, d):
        super().__init__()
        self.d = d

    def log_prob(self, x):
        z, logdet = self.forward(x)
        return std_normal_logp(z) + logdet

    def sample(self, n, generator=None):
        p = next(self.parameters())
        return self.inverse(torch.randn(n, self.d, dtype=p.dtype, device=p.device, generator=generator))

    def redraw_biases(self, scale=0.1):
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    m.bias.normal_(0.0, scale)

    def zero_last_layers(self):
        """The identity flow (nflow's fresh layers): every conditioner's last layer set to 0."""
        with torch.no_grad():
            for net in self.nets():
                net[-1].weight.zero_()
                net[-1].bias.zero_()


class SplineCoupling(nn.Module):
    """Transforms x_B with the spline given x_A; B = the second half (x[d//2:]), or the first
    half when `flip` (nflow's CouplingMask::half(d, flip))."""

    def __init__(self, d, h, flip):
        super().__init__()
        half = d // 2
        self.cond, self.tr = (slice(half, d), slice(0, half)) if flip else (slice(0, half), slice(half, d))
        self.flip = flip
        n_cond, n_tr = (d - half, half) if flip else (half, d - half)
        self.net = mlp(n_cond, h, PARAMS_PER_DIM * n_tr)

    def _join(self, a, b):
        return torch.cat([b, a] if self.flip else [a, b], -1)

    def forward(self, x):
        a = x[:, self.cond]
        b, ld = rq_forward(x[:, self.tr], self.net(a))
        return self._join(a, b), ld

    def inverse(self, z):
        a = z[:, self.cond]
        return self._join(a, rq_inverse(z[:, self.tr], self.net(a)))


class NSF(Flow):
    def __init__(self, d, h, n_layers=N_COUPLINGS):
        super().__init__(d)
        self.layers = nn.ModuleList([SplineCoupling(d, h, k % 2 == 1) for k in range(n_layers)])
        self.redraw_biases()

    def nets(self):
        return [layer.net for layer in self.layers]

    def forward(self, x):
        logdet = 0.0
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z):
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z


class MaskedLinear(nn.Linear):
    def __init__(self, din, dout, mask):
        super().__init__(din, dout)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """MLP(d -> H -> H -> (3K-1)·d) masked so that output i·P + p sees only the inputs before i in
    the order (natural, or reversed when `reverse`)."""

    def __init__(self, d, h, reverse):
        super().__init__()
        idx = torch.arange(d)
        deg_in = d - idx if reverse else idx + 1
        deg_h = torch.sort(torch.arange(h) % max(1, d - 1) + min(1, d - 1)).values
        deg_out = deg_in.repeat_interleave(PARAMS_PER_DIM)
        self.net = nn.Sequential(MaskedLinear(d, h, deg_h[:, None] >= deg_in[None, :]), nn.ReLU(),
                                 MaskedLinear(h, h, deg_h[:, None] >= deg_h[None, :]), nn.ReLU(),
                                 MaskedLinear(h, PARAMS_PER_DIM * d, deg_out[:, None] > deg_h[None, :]))

    def forward(self, x):
        return self.net(x)


class NSFAutoregressive(Flow):
    def __init__(self, d, h, n_layers=N_AUTOREGRESSIVE):
        super().__init__(d)
        self.mades = nn.ModuleList([MADE(d, h, k % 2 == 1) for k in range(n_layers)])
        self.redraw_biases()

    def nets(self):
        return [m.net for m in self.mades]

    def forward(self, x):
        logdet = 0.0
        for made in self.mades:
            x, ld = rq_forward(x, made(x))
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z):
        for made in reversed(self.mades):
            x = torch.zeros_like(z)
            for _ in range(self.d):  # after pass k the first k + 1 features of the order are exact
                x = rq_inverse(z, made(x))
            z = x
        return z


MODELS = {"NSF": NSF, "NSF-AR": NSFAutoregressive}


def make(name, d, h=None, dtype=torch.float32, seed=0):
    """Deterministic construction as flows.make: seed 1000·seed + d, then cast to dtype."""
    h = HIDDEN[d] if h is None else h
    torch.manual_seed(1000 * seed + d)
    m = MODELS[name](d, h).to(dtype)
    m.eval()
    return m


def nflow_parameters(model):
    """The flat parameter vector of the same nflow flow (visit order: layer by layer, each Linear's
    weight then bias, each tensor column-major; the last layer's rows permuted from feature-major
    i·P + p to nflow's blocked p·n + i), for loading with nflow::set_parameters."""
    flat = []
    for net in model.nets():
        linears = [lin for lin in net if isinstance(lin, nn.Linear)]
        n = linears[-1].out_features // PARAMS_PER_DIM
        blocked = torch.arange(n * PARAMS_PER_DIM).view(n, PARAMS_PER_DIM).t().reshape(-1)
        for lin in linears:
            w, b = lin.weight.detach(), lin.bias.detach()
            if lin is linears[-1]:
                w, b = w[blocked], b[blocked]
            flat += [w.t().reshape(-1), b]
    return torch.cat(flat)


# ------------------------------------------------------------------------------------ benchmarks
def register(flows, bench_torch=None):
    """Makes the shared scripts' flows.make (and bench_torch's batch sizes) know NSF and NSF-AR."""
    flows.MODELS.update(MODELS)
    if bench_torch is not None:
        bench_torch.LARGE_LOGPROB.update(LARGE_LOGPROB)
        bench_torch.LARGE_SAMPLE.update(LARGE_SAMPLE)


def main():
    ap = argparse.ArgumentParser(description="Runs a shared benchmark script with NSF and NSF-AR registered.")
    ap.add_argument("--bench-dir", required=True, help="directory of flows.py, bench_torch.py, bench_train.py")
    ap.add_argument("script", choices=["bench_torch.py", "bench_train.py"])
    a, rest = ap.parse_known_args()
    sys.path.insert(0, os.path.abspath(a.bench_dir))
    flows = importlib.import_module("flows")
    script = importlib.import_module(a.script[:-3])
    register(flows, script if a.script == "bench_torch.py" else None)
    sys.argv = [os.path.join(a.bench_dir, a.script)] + rest
    script.main()


if __name__ == "__main__":
    main()
