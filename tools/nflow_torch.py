"""nflow_torch: PyTorch reference modules that mirror nflow's C++ layers one to one.

Train a flow in PyTorch with these modules, then write its parameters with
``save_safetensors(state_dict_for_nflow(model), path)`` and load them in C++ with
``nflow::io::load(flow, path)`` into the matching ``nflow::Flow<...>`` / ``nflow::Density<...>``
(``cpp_snippet(model)`` prints the matching C++ type and constructor calls).

Conventions (the same as nflow's, see include/nflow/...):

* Tensors are batch-first here (``x`` is ``N x D``, PyTorch's habit); nflow is one sample per
  column (``D x N``). Parameter tensors have the same shapes in both (a dense weight is
  ``[out, in]``, a bias ``[out]``).
* ``forward(x, context=None)`` is data -> latent and returns ``(z, logabsdet)`` with
  ``logabsdet = log|det dz/dx|`` (shape ``[N]``); ``inverse(z, context=None)`` is latent -> data
  and returns ``(x, log|det dx/dz|)``.
* Parameter names are nflow's ``visit_parameters`` names: ``"0.conditioner.layers.0.weight"`` in
  a ``Flow``, ``"base.loc"`` / ``"transform.3.log_s"`` in a ``Density``. ``state_dict_for_nflow``
  returns exactly the tensors nflow expects: the parameters (MADE weights with their masks
  applied; LU factors with their ignored triangles zeroed) and the buffers.
* Buffers are the integer state that defines the map but is not trained. They are exported as
  int64 vectors (I64 in the file) by nflow's ``visit_buffers`` names and conventions, composed
  like parameter names: a coupling's ``"mask"`` (1 = transformed, 0 = conditions), a MAF's / IAF's
  ``"made.order"`` and ``"made.hidden_degrees.<l>"``, a Permutation's ``"permutation"``, an
  LULinear's ``"permutation"`` and ``"sign"`` (+1/-1), an ActNorm's ``"initialized"`` (1/0).
  nflow's ``io::load`` requires every one of them and applies them, so the C++ constructor has to
  match only the architecture (types, sizes, hidden widths and layers, context sizes, the number
  of features a coupling transforms). ``cpp_snippet`` writes matching constructor calls;
  ``save_safetensors`` also puts the architecture in the file's ``__metadata__`` (key
  ``"nflow_torch.architecture"``, JSON).

Transformers: a coupling or autoregressive layer holds one, as nflow's ``Coupling<Transformer>``
and ``MaskedAutoregressive<Transformer>`` do: ``AffineTransformer`` (AffineCoupling, MAF, IAF),
``AdditiveTransformer`` (AdditiveCoupling) or ``RationalQuadraticSpline`` (SplineCoupling,
SplineAutoregressive: neural spline flows on R, an interval or a circle, with nflow's
parameterisation and edge rules; bounded and circular flows take a ``UniformBox`` base). The
spline's options are constructor arguments on both sides, not tensors in the file.

Random structures: nflow's seeded ``InputOrder::Random`` / ``HiddenDegrees::Random`` (``MAF(...,
order="random", hidden_degrees="random", seed=s)``), ``Permutation::random(dim, seed)`` and
``LULinear::random_orthogonal(dim, seed)`` are reproduced bit for bit from the same seed
(``MT19937_64`` is C++'s std::mt19937_64, and nflow's samplers are reimplemented). Only the
structure (order, degrees, permutation, P and signs) is reproduced; initial weights are drawn
with torch's generator, not nflow's.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS", "DEFAULT_LOG_SCALE_BOUND", "half_mask", "alternating_mask",
    "MLP", "MADE", "AffineTransformer", "AdditiveTransformer", "RationalQuadraticSpline", "SPLINE_DOMAINS",
    "AffineCoupling", "AdditiveCoupling", "SplineCoupling", "MAF", "IAF", "SplineAutoregressive", "ActNorm",
    "LULinear", "Reverse", "Permutation", "ElementwiseAffine", "Flow", "StandardNormal", "DiagonalNormal",
    "UniformBox",
    "Density", "initialize_act_norms", "state_dict_for_nflow", "buffers_for_nflow", "save_safetensors",
    "load_safetensors", "to_config", "from_config", "cpp_snippet",
]

#: nflow's Constants<Scalar>::default_log_scale_bound (the B of alpha = B tanh(r / B)).
DEFAULT_LOG_SCALE_BOUND = 3.0
HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


def _elu(a):
    # nflow::nn::ELU computes max(a, 0) + (exp(min(a, 0)) - 1) (exp - 1, not expm1).
    return torch.clamp(a, min=0) + (torch.exp(torch.clamp(a, max=0)) - 1)


#: nflow::nn activation policies by name (nflow's Activation::name) -> (function, C++ type).
ACTIVATIONS = {
    "relu": (torch.relu, "nflow::nn::ReLU"),
    "tanh": (torch.tanh, "nflow::nn::Tanh"),
    "silu": (lambda a: a * torch.sigmoid(a), "nflow::nn::SiLU"),
    "elu": (_elu, "nflow::nn::ELU"),
    "identity": (lambda a: a, "nflow::nn::Identity"),
}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"nflow_torch: unknown activation {name!r} (one of {sorted(ACTIVATIONS)})")
    return ACTIVATIONS[name][0]



# ---- nflow's reproducible random structures (std::mt19937_64 and nflow/core/random.hpp) --------

_M64 = (1 << 64) - 1


class MT19937_64:
    """C++ ``std::mt19937_64`` (the 64-bit Mersenne Twister), bit for bit: ``gen()`` returns the
    next 64-bit output, as nflow's ``random_bits64`` does for this engine."""

    def __init__(self, seed: int = 5489):
        mt = [0] * 312
        mt[0] = seed & _M64
        for i in range(1, 312):
            mt[i] = (6364136223846793005 * (mt[i - 1] ^ (mt[i - 1] >> 62)) + i) & _M64
        self._mt, self._i = mt, 312

    def __call__(self) -> int:
        if self._i >= 312:
            mt = self._mt
            for k in range(312):
                y = (mt[k] & 0xFFFFFFFF80000000) | (mt[(k + 1) % 312] & 0x7FFFFFFF)
                v = mt[(k + 156) % 312] ^ (y >> 1)
                if y & 1:
                    v ^= 0xB5026F5AA96619E9
                mt[k] = v
            self._i = 0
        y = self._mt[self._i]
        self._i += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & _M64


def _uniform_below(gen: MT19937_64, bound: int) -> int:
    # nflow::nn::MADE::uniform_below and the inner draw of nflow::random_permutation.
    reject_from = _M64 - _M64 % bound
    while True:
        r = gen()
        if r < reject_from:
            return r % bound


def random_permutation(n: int, gen: MT19937_64) -> List[int]:
    """nflow::random_permutation(n, gen) (Fisher-Yates from the top, unbiased by rejection)."""
    p = list(range(n))
    for i in range(n - 1, 0, -1):
        j = _uniform_below(gen, i + 1)
        p[i], p[j] = p[j], p[i]
    return p


def _uniform_open01(gen: MT19937_64) -> float:
    return ((gen() >> 11) + 0.5) * 2.0 ** -53


def _standard_normal_matrix(rows: int, cols: int, gen: MT19937_64) -> torch.Tensor:
    # nflow::standard_normal_matrix: Marsaglia's polar method in pairs, filled column-major.
    vals = []
    n = rows * cols
    while len(vals) < n:
        while True:
            u = 2.0 * _uniform_open01(gen) - 1.0
            v = 2.0 * _uniform_open01(gen) - 1.0
            s = u * u + v * v
            if 0.0 < s < 1.0:
                break
        f = math.sqrt(-2.0 * math.log(s) / s)
        vals.extend([u * f, v * f])
    return torch.tensor(vals[:n], dtype=torch.float64).reshape(cols, rows).T.contiguous()

# ---- masks ----------------------------------------------------------------------------------

def half_mask(dim: int, flip: bool = False) -> List[bool]:
    """nflow::CouplingMask::half: the first floor(dim/2) features condition, the rest are
    transformed (``flip`` swaps the roles). Returns ``transformed[i]``."""
    t = [i >= dim // 2 for i in range(dim)]
    return [not v for v in t] if flip else t


def alternating_mask(dim: int, flip: bool = False) -> List[bool]:
    """nflow::CouplingMask::alternating: even features condition, odd ones are transformed."""
    return [(i % 2 == 1) != flip for i in range(dim)]


# ---- dense networks -------------------------------------------------------------------------

class _Dense(nn.Module):
    """One dense layer with nflow's names: ``weight`` [out, in], ``bias`` [out] and, for the
    first layer of a conditional network, ``context_weight`` [out, context_dim]."""

    def __init__(self, in_dim: int, out_dim: int, context_dim: int = 0, fan_in: Optional[int] = None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_dim, in_dim))
        if context_dim > 0:
            self.context_weight = nn.Parameter(torch.zeros(out_dim, context_dim))
        else:
            self.context_weight = None
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.fan_in = fan_in if fan_in is not None else in_dim + context_dim

    def reset_parameters(self, zero: bool = False):
        # PyTorch's nn.Linear default: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) (nflow's too).
        bound = 1.0 / math.sqrt(self.fan_in) if self.fan_in > 0 else 0.0
        with torch.no_grad():
            for p in (self.weight, self.context_weight, self.bias):
                if p is not None:
                    if zero:
                        p.zero_()
                    else:
                        p.uniform_(-bound, bound)


class MLP(nn.Module):
    """nflow::nn::MLP: h0 = f(W0 x + C0 c + b0), hk = f(Wk h(k-1) + bk), y = WL h(L-1) + bL.

    Parameters "layers.k.weight", "layers.0.context_weight" (context_dim > 0), "layers.k.bias".
    ``zero_last_layer`` (nflow's default for conditioners) makes a fresh network output 0."""

    def __init__(self, in_dim: int, out_dim: int, hidden_width: int, hidden_layers: int,
                 context_dim: int = 0, activation: str = "relu", zero_last_layer: bool = True):
        super().__init__()
        if hidden_layers < 1:
            raise ValueError("nflow_torch.MLP: hidden_layers must be >= 1 (as nflow::nn::MLP)")
        if in_dim + context_dim < 1:
            raise ValueError("nflow_torch.MLP: in_dim + context_dim must be >= 1")
        self.in_dim, self.out_dim, self.context_dim = in_dim, out_dim, context_dim
        self.hidden_width, self.hidden_layers, self.activation = hidden_width, hidden_layers, activation
        self._f = _activation(activation)
        layers = []
        for k in range(hidden_layers + 1):
            rows = out_dim if k == hidden_layers else hidden_width
            cols = in_dim if k == 0 else hidden_width
            layers.append(_Dense(cols, rows, context_dim if k == 0 else 0))
        self.layers = nn.ModuleList(layers)
        for k, layer in enumerate(self.layers):
            layer.reset_parameters(zero=zero_last_layer and k == hidden_layers)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = x
        for k, layer in enumerate(self.layers):
            a = h @ layer.weight.T
            if k == 0 and self.context_dim > 0:
                if context is None:
                    raise ValueError("nflow_torch.MLP: this network needs a context")
                a = a + context @ layer.context_weight.T
            a = a + layer.bias
            h = self._f(a) if k < self.hidden_layers else a
        return h


class MADE(nn.Module):
    """nflow::nn::MADE with nflow's degrees and masks (Sequential hidden degrees).

    Input dimension ``order[k]`` has degree k + 1. Hidden layer l has degrees cycling
    lo, lo+1, ..., D-1 (sorted ascending), lo_0 = min(0 if context else 1, D-1), lo_l = smallest
    degree of layer l-1. Masks: hidden <- input m(u) >= deg(j), hidden <- hidden m_l(u) >=
    m_(l-1)(v), output <- hidden deg(i) > m(v) strictly (output row r belongs to dimension r % D).
    The context feeds the first layer unmasked. Output blocked: [all shifts, all raw log-scales]."""

    def __init__(self, dim: int, hidden_width: int, hidden_layers: int, context_dim: int = 0,
                 order: Optional[Sequence[int]] = None, params_per_dim: int = 2, activation: str = "relu",
                 zero_last_layer: bool = True, hidden_degrees: str = "sequential", seed: int = 0):
        super().__init__()
        if dim < 1 or hidden_width < 1 or hidden_layers < 0 or context_dim < 0:
            raise ValueError("nflow_torch.MADE: invalid sizes")
        order = list(range(dim)) if order is None else [int(v) for v in order]
        if sorted(order) != list(range(dim)):
            raise ValueError(f"nflow_torch.MADE: order must be a permutation of 0..{dim - 1}, got {order}")
        self.dim, self.hidden_width, self.hidden_layers, self.context_dim = dim, hidden_width, hidden_layers, context_dim
        self.params_per_dim, self.activation, self.order = params_per_dim, activation, order
        self._f = _activation(activation)
        in_deg = [0] * dim
        for k, i in enumerate(order):
            in_deg[i] = k + 1
        self.input_degrees = in_deg
        if hidden_degrees not in ("sequential", "random"):
            raise ValueError("nflow_torch.MADE: hidden_degrees must be 'sequential' or 'random'")
        self.hidden_degrees_kind, self.seed = hidden_degrees, seed
        gen = MT19937_64(seed)  # nflow::nn::MADE draws its random degrees first from mt19937_64(seed)
        lo = min(0 if context_dim > 0 else 1, dim - 1)
        hidden_deg = []
        for _ in range(hidden_layers):
            rng = dim - lo
            if hidden_degrees == "sequential":
                deg = sorted(lo + u % rng for u in range(hidden_width))
            else:
                deg = sorted(lo + _uniform_below(gen, rng) for _ in range(hidden_width))
            lo = deg[0]
            hidden_deg.append(deg)
        self.hidden_degrees = hidden_deg
        out = dim * params_per_dim
        L = hidden_layers
        layers = []
        for l in range(L + 1):
            rows = out if l == L else hidden_width
            cols = dim if l == 0 else hidden_width
            cin = in_deg if l == 0 else hidden_deg[l - 1]
            mask = torch.zeros(rows, cols)
            for r in range(rows):
                for c in range(cols):
                    if l == L:
                        mask[r, c] = 1.0 if in_deg[r % dim] > cin[c] else 0.0
                    else:
                        mask[r, c] = 1.0 if hidden_deg[l][r] >= cin[c] else 0.0
            layer = _Dense(cols, rows, context_dim if l == 0 else 0)
            layer.register_buffer("mask", mask)
            layers.append(layer)
        self.layers = nn.ModuleList(layers)
        for l, layer in enumerate(self.layers):
            layer.reset_parameters()
            with torch.no_grad():
                layer.weight.mul_(layer.mask)
        if zero_last_layer:
            last = self.layers[L]
            with torch.no_grad():
                last.weight.zero_()
                last.bias.zero_()
                if L == 0 and last.context_weight is not None:
                    last.context_weight.zero_()

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = x
        L = self.hidden_layers
        for l, layer in enumerate(self.layers):
            a = h @ (layer.weight * layer.mask).T
            if l == 0 and self.context_dim > 0:
                if context is None:
                    raise ValueError("nflow_torch.MADE: this network needs a context")
                a = a + context @ layer.context_weight.T
            a = a + layer.bias
            h = self._f(a) if l < L else a
        return h

    def _nflow_buffers(self) -> Dict[str, torch.Tensor]:
        """nflow::nn::MADE's buffers: "order" [D] (dimension order[k] has degree k + 1) and
        "hidden_degrees.<l>" [H] per hidden layer (ascending, as nflow stores its units)."""
        out = {"order": _i64(self.order)}
        for l, deg in enumerate(self.hidden_degrees):
            out[f"hidden_degrees.{l}"] = _i64(deg)
        return out


# ---- transformers -----------------------------------------------------------------------------
# nflow's transformer contract (bijectors/transformers/affine.hpp): an elementwise map of the n
# features of v ([N, n] here) given raw parameters ``params`` ([N, P·n], blocked: column p·n + i
# is raw parameter p of feature i, nflow's row p·n + i); ``forward`` is data -> latent, both
# directions return (value, log|det| summed over the features, shape [N]).

def _affine_forward(x, mu, raw, bound):
    alpha = bound * torch.tanh(raw / bound)
    return (x - mu) * torch.exp(-alpha), -alpha.sum(-1)


def _affine_inverse(z, mu, raw, bound):
    alpha = bound * torch.tanh(raw / bound)
    return mu + torch.exp(alpha) * z, alpha.sum(-1)


class AffineTransformer:
    """nflow::AffineTransformer<S>(bound): z = (x - mu) exp(-alpha), alpha = B tanh(r / B),
    parameters blocked [all mu, all raw log-scales r]."""
    params_per_dim = 2

    def __init__(self, log_scale_bound: float = DEFAULT_LOG_SCALE_BOUND):
        self.log_scale_bound = float(log_scale_bound)

    def forward(self, x, params):
        n = x.shape[1]
        return _affine_forward(x, params[:, :n], params[:, n:2 * n], self.log_scale_bound)

    def inverse(self, z, params):
        n = z.shape[1]
        return _affine_inverse(z, params[:, :n], params[:, n:2 * n], self.log_scale_bound)


class AdditiveTransformer:
    """nflow::AdditiveTransformer<S>: z = x - mu, log|det| = 0."""
    params_per_dim = 1

    def forward(self, x, params):
        return x - params, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def inverse(self, z, params):
        return z + params, torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)


#: nflow::SplineDomain by name -> (C++ enumerator, default [lower, upper]).
SPLINE_DOMAINS = {
    "unbounded": ("nflow::SplineDomain::Unbounded", (-5.0, 5.0)),
    "bounded": ("nflow::SplineDomain::Bounded", (0.0, 1.0)),
    "circular": ("nflow::SplineDomain::Circular", (-math.pi, math.pi)),
}
#: nflow::SplineOptions' default minimum bin width, height and knot derivative.
DEFAULT_SPLINE_MINIMUM = 1e-3


class RationalQuadraticSpline:
    """nflow::RationalQuadraticSpline<S, bins, Domain>(SplineOptions): the monotone
    rational-quadratic spline of neural spline flows (Durkan et al. 2019, arXiv:1906.04032), with
    nflow's parameterisation and edge rules (include/nflow/bijectors/transformers/
    rational_quadratic.hpp), in PyTorch.

    Raw parameters of one feature (``params_per_dim``, blocked p·n + i): K raw widths u, K raw
    heights v, then the raw knot derivatives r ("unbounded": the K - 1 interior knots, the two
    boundary derivatives are 1; "bounded": all K + 1; "circular": K, r_0 serving the first and the
    last knot). With span = upper - lower:

        w_k = span (min_w + (1 - K min_w) softmax(u)_k),  h_k likewise from v and min_h,
        X_k = lower + sum_{j<k} w_j (X_K = upper exactly),  Y_k likewise,
        delta = 1 + (1 - min_delta) (softplus(r) - softplus(0)) / log 2,

    so all-zero raw parameters are the identity. In bin k (X_k <= x < X_{k+1}; the bin of x is the
    number of interior knots <= x), s = h_k/w_k, xi = (x - X_k)/w_k, t = xi (1 - xi),
    D = s + (d_k + d_{k+1} - 2s) t: y = Y_k + h_k (s xi^2 + d_k t) / D, dy/dx = s^2 (d_{k+1} xi^2 +
    2 s t + d_k (1 - xi)^2) / D^2; the inverse takes the cancellation-free root of the bin's
    quadratic. Outside [lower, upper] (x = upper included): "unbounded" is the identity (log-det
    0), "bounded" continues linearly with the boundary derivative, "circular" reduces x by whole
    periods into [lower, upper), maps it and adds the periods back. NaN gives NaN value and
    log-det. Every formula is written in nflow's order of operations (softplus as max(r, 0) +
    log(1 + e^-|r|), knots summed one by one), so the two agree to rounding.

    ``lower``/``upper`` None means the domain's default ([-5, 5], [0, 1], [-pi, pi])."""

    def __init__(self, bins: int = 8, domain: str = "unbounded", lower: Optional[float] = None,
                 upper: Optional[float] = None, min_bin_width: float = DEFAULT_SPLINE_MINIMUM,
                 min_bin_height: float = DEFAULT_SPLINE_MINIMUM,
                 min_derivative: float = DEFAULT_SPLINE_MINIMUM):
        if domain not in SPLINE_DOMAINS:
            raise ValueError(f"nflow_torch.RationalQuadraticSpline: domain must be one of {sorted(SPLINE_DOMAINS)}")
        if not 1 <= int(bins) <= 256:
            raise ValueError("nflow_torch.RationalQuadraticSpline: bins must be in [1, 256]")
        self.bins, self.domain = int(bins), domain
        default = SPLINE_DOMAINS[domain][1]
        self.lower = float(default[0] if lower is None else lower)
        self.upper = float(default[1] if upper is None else upper)
        if not (math.isfinite(self.lower) and math.isfinite(self.upper) and self.lower < self.upper):
            raise ValueError("nflow_torch.RationalQuadraticSpline: 'lower' < 'upper' must be finite, "
                             f"got [{self.lower}, {self.upper}]")
        for name, value, limit in (("min_bin_width", min_bin_width, 1.0 / self.bins),
                                   ("min_bin_height", min_bin_height, 1.0 / self.bins),
                                   ("min_derivative", min_derivative, 1.0)):
            if not 0.0 < float(value) < limit:
                raise ValueError(f"nflow_torch.RationalQuadraticSpline: '{name}' must be in (0, {limit}), got {value}")
        self.min_bin_width, self.min_bin_height = float(min_bin_width), float(min_bin_height)
        self.min_derivative = float(min_derivative)
        K = self.bins
        self.derivative_params = K - 1 if domain == "unbounded" else K + 1 if domain == "bounded" else K
        self.params_per_dim = 2 * K + self.derivative_params

    def options(self) -> dict:
        """The constructor's arguments (JSON-able; ``RationalQuadraticSpline(**options())``)."""
        return {"bins": self.bins, "domain": self.domain, "lower": self.lower, "upper": self.upper,
                "min_bin_width": self.min_bin_width, "min_bin_height": self.min_bin_height,
                "min_derivative": self.min_derivative}

    # -- the knots ------------------------------------------------------------------------------
    def _knots(self, p, minimum):
        # softmax shifted by its maximum, then lower + span·Σ(min + (1 - K·min)·p), last = upper.
        K, span = self.bins, self.upper - self.lower
        e = torch.exp(p - p.max(1, keepdim=True)[0])
        sum_e = e[:, 0]
        for k in range(1, K):
            sum_e = sum_e + e[:, k]
        w = e / sum_e.unsqueeze(1)
        scale, floor = span * (1.0 - K * minimum), span * minimum
        knots = [torch.full_like(w[:, 0], self.lower)]
        for b in range(1, K):
            knots.append(knots[-1] + (floor + scale * w[:, b - 1]))
        knots.append(torch.full_like(w[:, 0], self.upper))
        return torch.stack(knots, 1)

    @staticmethod
    def _softplus(r):
        return torch.clamp(r, min=0) + torch.log(1.0 + torch.exp(-r.abs()))

    def _derivatives(self, r):
        # delta = 1 + (1 - min_delta)/log 2 · (softplus(r) - softplus(0)), softplus(0) computed
        # by the same formula (exactly 1 at r = 0).
        sp0 = self._softplus(torch.zeros((), dtype=r.dtype, device=r.device))
        d = 1.0 + (1.0 - self.min_derivative) / math.log(2.0) * (self._softplus(r) - sp0)
        ones = torch.ones(r.shape[0], 1, r.shape[2], dtype=r.dtype, device=r.device)
        if self.domain == "unbounded":
            return torch.cat([ones, d, ones], 1)
        if self.domain == "circular":
            return torch.cat([d, d[:, :1]], 1)
        return d

    def knots(self, params, n):
        """(X, Y, delta), each [N, K + 1, n], of the n features' splines from ``params``."""
        K = self.bins
        p = params.reshape(params.shape[0], self.params_per_dim, n)
        return (self._knots(p[:, :K], self.min_bin_width), self._knots(p[:, K:2 * K], self.min_bin_height),
                self._derivatives(p[:, 2 * K:]))

    # -- the map --------------------------------------------------------------------------------
    def forward(self, x, params):
        """z = spline(x), log|dz/dx| summed over the features."""
        return self._evaluate(x, params, inverse=False)

    def inverse(self, z, params):
        """x = spline^-1(z), log|dx/dz| summed over the features."""
        return self._evaluate(z, params, inverse=True)

    def elementwise(self, v, params, inverse=False):
        """The value and the per-feature log|derivative| ([N, n] each)."""
        K = self.bins
        X, Y, d = self.knots(params, v.shape[1])
        lo, hi, span = self.lower, self.upper, self.upper - self.lower
        if self.domain == "circular":
            shift = span * torch.floor((v - lo) / span)
            v = v - shift
            under = v < lo
            v = torch.where(under, v + span, v)
            shift = torch.where(under, shift - span, shift)
            over = v >= hi
            v = torch.where(over, torch.full_like(v, lo), v)
            shift = torch.where(over, shift + span, shift)
        else:
            shift = torch.zeros_like(v)
        knots = Y if inverse else X
        # The bin: the number of interior knots <= v (0 for NaN).
        b = (knots[:, 1:K] <= v.unsqueeze(1)).sum(1, keepdim=True)
        take = lambda t, o: t.gather(1, b + o).squeeze(1)  # noqa: E731
        xk, yk, d0, d1 = take(X, 0), take(Y, 0), take(d, 0), take(d, 1)
        w, h = take(X, 1) - xk, take(Y, 1) - yk
        s = h / w
        below, above = ~(v >= knots[:, 0]), v >= knots[:, K]
        tiny = torch.finfo(v.dtype).tiny
        if inverse:
            dy = torch.clamp(v - yk, min=0)
            e = d0 + d1 - 2.0 * s
            a = h * (s - d0) + dy * e
            bq = h * d0 - dy * e
            c = -s * dy
            root = torch.sqrt(torch.clamp(bq * bq - 4.0 * a * c, min=0))
            positive = bq >= 0
            den = torch.where(positive, bq + root,
                              4.0 * a * s * dy / torch.where(positive, torch.ones_like(bq), root - bq))
            den = torch.clamp(den, min=tiny)
            xi_raw = 2.0 * s * dy / den
            xi = torch.clamp(xi_raw, max=1.0)
            residual = v + (xk - yk) + dy * (2.0 * h - den) / den
            out = torch.where(xi_raw <= 1.0, residual, xk + w * xi)
        else:
            dx = v - xk
            xi = torch.clamp(dx / w, 0.0, 1.0)
        t = xi * (1.0 - xi)
        den = s + (d0 + d1 - 2.0 * s) * t
        m = torch.clamp(s + (d1 - s) * xi * xi + (d0 - s) * (1.0 - xi) * (1.0 - xi), min=tiny)
        log_det = torch.log(s * s * m / (den * den))
        if inverse:
            log_det = -log_det
        else:
            q = s * (s + (d0 - s) * (1.0 - xi)) / den
            out = v + (yk - xk) + dx * (q - 1.0)
        outside = below | above
        if self.domain == "unbounded":
            out = torch.where(outside, v, out)
            log_det = torch.where(outside, torch.zeros_like(v), log_det)
        else:
            dlo, dhi = d[:, 0], d[:, K]
            if inverse:
                left, right = lo + (v - lo) / dlo, hi + (v - hi) / dhi
            else:
                left, right = lo + dlo * (v - lo), hi + dhi * (v - hi)
            out = torch.where(below, left, torch.where(above, right, out))
            tail = torch.where(below, torch.log(dlo), torch.log(dhi))
            log_det = torch.where(outside, -tail if inverse else tail, log_det)
        log_det = torch.where(torch.isnan(v), torch.full_like(v, float("nan")), log_det)
        return out + shift, log_det

    def _evaluate(self, v, params, inverse):
        out, log_det = self.elementwise(v, params, inverse)
        return out, log_det.sum(-1)


# ---- bijectors --------------------------------------------------------------------------------

def _i64(values) -> torch.Tensor:
    """A buffer as nflow stores it: a 1-D int64 tensor."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().reshape(-1).tolist()
    return torch.tensor([int(v) for v in values], dtype=torch.int64)


class _Bijector(nn.Module):
    def _nflow_tensors(self) -> Dict[str, torch.Tensor]:
        """The parameters by nflow's ``visit_parameters`` names."""
        return {n: p.detach() for n, p in self.named_parameters()}

    def _nflow_buffers(self) -> Dict[str, torch.Tensor]:
        """The buffers by nflow's ``visit_buffers`` names, as int64 vectors (none by default)."""
        return {}


class _Coupling(_Bijector):
    """nflow::Coupling<Transformer>: z_A = x_A, z_B = tau(x_B; MLP(x_A, c)) with the
    transformer's P = ``transformer.params_per_dim`` raw parameters per transformed feature
    (the MLP's output blocked: parameter p of feature i of B is output p·|B| + i)."""
    kind = ""

    def __init__(self, dim: int, mask: Optional[Sequence[bool]], hidden_width: int, hidden_layers: int,
                 context_dim: int, activation: str, transformer):
        super().__init__()
        mask = half_mask(dim) if mask is None else [bool(v) for v in mask]
        if len(mask) != dim or dim < 2:
            raise ValueError("nflow_torch: a coupling mask needs dim >= 2 entries equal to the layer's dim")
        self.dim, self.mask, self.context_dim, self.activation = dim, mask, context_dim, activation
        self.hidden_width, self.hidden_layers, self.transformer = hidden_width, hidden_layers, transformer
        self.cond_idx = [i for i, t in enumerate(mask) if not t]
        self.trans_idx = [i for i, t in enumerate(mask) if t]
        if not self.trans_idx:
            raise ValueError("nflow_torch: the coupling mask transforms no feature")
        if not self.cond_idx and context_dim == 0:
            raise ValueError("nflow_torch: the coupling mask leaves no feature to condition on and there is no context")
        self.conditioner = MLP(len(self.cond_idx), transformer.params_per_dim * len(self.trans_idx), hidden_width,
                               hidden_layers, context_dim, activation, zero_last_layer=True)

    def _split(self, v):
        return v[:, self.cond_idx], v[:, self.trans_idx]

    def _merge(self, a, b):
        out = torch.empty(a.shape[0], self.dim, dtype=a.dtype, device=a.device)
        out[:, self.cond_idx] = a
        out[:, self.trans_idx] = b
        return out

    def forward(self, x, context=None):
        xa, xb = self._split(x)
        zb, ld = self.transformer.forward(xb, self.conditioner(xa, context))
        return self._merge(xa, zb), ld

    def inverse(self, z, context=None):
        za, zb = self._split(z)
        xb, ld = self.transformer.inverse(zb, self.conditioner(za, context))
        return self._merge(za, xb), ld

    def _nflow_buffers(self):
        # nflow::Coupling's "mask": 1 if feature i is transformed, 0 if it conditions.
        return {"mask": _i64(1 if t else 0 for t in self.mask)}


class AffineCoupling(_Coupling):
    """nflow::AffineCoupling: z_B = (x_B - mu) exp(-alpha), alpha = B tanh(r / B), with
    [mu, r] = MLP(x_A, c) (blocked: first |B| outputs mu, next |B| raw log-scales r);
    log|det| = -sum(alpha). ``mask[i]`` True = feature i is transformed."""
    kind = "AffineCoupling"

    def __init__(self, dim, mask=None, hidden_width=64, hidden_layers=2, context_dim=0, activation="relu",
                 log_scale_bound: float = DEFAULT_LOG_SCALE_BOUND):
        super().__init__(dim, mask, hidden_width, hidden_layers, context_dim, activation,
                         AffineTransformer(log_scale_bound))

    @property
    def log_scale_bound(self) -> float:
        return self.transformer.log_scale_bound


class AdditiveCoupling(_Coupling):
    """nflow::AdditiveCoupling (NICE): z_B = x_B - mu(x_A, c), log|det| = 0."""
    kind = "AdditiveCoupling"

    def __init__(self, dim, mask=None, hidden_width=64, hidden_layers=2, context_dim=0, activation="relu"):
        super().__init__(dim, mask, hidden_width, hidden_layers, context_dim, activation, AdditiveTransformer())


class SplineCoupling(_Coupling):
    """nflow::Coupling<RationalQuadraticSpline<S, K, Domain>> (nflow::SplineCoupling when the
    domain is unbounded): z_B = spline(x_B; MLP(x_A, c)), the MLP's (3K - 1, 3K + 1 or 3K)·|B|
    outputs blocked as the spline's raw parameters. ``spline``: a RationalQuadraticSpline
    (default: 8 bins on [-5, 5], the identity outside). A fresh layer is the identity."""
    kind = "SplineCoupling"

    def __init__(self, dim, mask=None, hidden_width=64, hidden_layers=2, context_dim=0, activation="relu",
                 spline: Optional[RationalQuadraticSpline] = None):
        super().__init__(dim, mask, hidden_width, hidden_layers, context_dim, activation,
                         RationalQuadraticSpline() if spline is None else spline)


def _made_order(dim: int, order, gen: "MT19937_64") -> List[int]:
    # nflow::nn::make_order: Natural, Reversed, Random (drawn from gen) or a custom permutation.
    if not isinstance(order, str):
        return [int(v) for v in order]
    if order == "natural":
        return list(range(dim))
    if order == "reversed":
        return list(range(dim - 1, -1, -1))
    if order == "random":
        return random_permutation(dim, gen)
    raise ValueError("nflow_torch: order must be 'natural', 'reversed', 'random' or a list of indices")


class _MaskedAutoregressive(_Bijector):
    """nflow::MaskedAutoregressive<Transformer>: theta = MADE(x, c) with the transformer's P
    parameters per dimension (MADE output p·D + i), z = tau(x; theta) in one pass; the inverse in
    D passes in the MADE's order.

    ``order``: "natural", "reversed", "random" (seeded) or a list (a permutation of 0..D-1,
    nflow's custom_order)."""
    kind = ""

    def __init__(self, dim: int, hidden_width: int, hidden_layers: int, context_dim: int, order,
                 activation: str, hidden_degrees: str, seed: int, transformer):
        super().__init__()
        # nflow's MaskedAutoregressive: gen = mt19937_64(seed); the Random order is drawn first
        # (random_permutation), then the MADE's seed (one 64-bit draw), which seeds its random
        # hidden degrees. ``seed`` matters only for "random" orders or hidden degrees.
        gen = MT19937_64(seed)
        seq = _made_order(dim, order, gen)
        self.dim, self.context_dim, self.order_spec, self.seed = dim, context_dim, order, seed
        self.transformer = transformer
        self.made = MADE(dim, hidden_width, hidden_layers, context_dim, seq, transformer.params_per_dim, activation,
                         hidden_degrees=hidden_degrees, seed=gen())

    @property
    def order(self) -> List[int]:
        return self.made.order

    def _ar_forward(self, x, context):
        return self.transformer.forward(x, self.made(x, context))

    def _ar_inverse(self, z, context):
        # Pass k fixes dimension order[k] (its parameters depend only on the ones before it);
        # the log-det is the transformer's at the final parameters.
        x = torch.zeros_like(z)
        for i in self.made.order:
            xi = self.transformer.inverse(z, self.made(x, context))[0][:, i]
            x = x.clone()
            x[:, i] = xi
        return x, self.transformer.inverse(z, self.made(x, context))[1]

    def forward(self, x, context=None):
        return self._ar_forward(x, context)

    def inverse(self, z, context=None):
        return self._ar_inverse(z, context)

    def _nflow_tensors(self):
        out = {}
        for l, layer in enumerate(self.made.layers):
            out[f"made.layers.{l}.weight"] = (layer.weight * layer.mask).detach()
            if layer.context_weight is not None:
                out[f"made.layers.{l}.context_weight"] = layer.context_weight.detach()
            out[f"made.layers.{l}.bias"] = layer.bias.detach()
        return out

    def _nflow_buffers(self):
        # nflow::MaskedAutoregressive (and Inverted<MAF>, under the same names): the MADE's.
        return {f"made.{k}": v for k, v in self.made._nflow_buffers().items()}


class MAF(_MaskedAutoregressive):
    """nflow::MAF (MaskedAutoregressive with the AffineTransformer, ContextDim = context_dim):
    [mu, r] = MADE(x, c), z = (x - mu) exp(-alpha), log|det| = -sum(alpha); inverse in D passes
    in the MADE's order."""
    kind = "MAF"

    def __init__(self, dim: int, hidden_width: int = 64, hidden_layers: int = 2, context_dim: int = 0,
                 order="natural", activation: str = "relu", log_scale_bound: float = DEFAULT_LOG_SCALE_BOUND,
                 hidden_degrees: str = "sequential", seed: int = 0):
        super().__init__(dim, hidden_width, hidden_layers, context_dim, order, activation, hidden_degrees, seed,
                         AffineTransformer(log_scale_bound))

    @property
    def log_scale_bound(self) -> float:
        return self.transformer.log_scale_bound


class SplineAutoregressive(_MaskedAutoregressive):
    """nflow::MaskedAutoregressive<RationalQuadraticSpline<S, K, Domain>, D, Hidden, Act,
    Eigen::Dynamic> (the layer of nflow::flows::autoregressive_nsf; its context size is a run-time
    value, so it counts as conditional in a Flow, like a coupling): z = spline(x; MADE(x, c)), the
    spline's raw parameter p of dimension i at MADE output p·D + i. ``spline``: a
    RationalQuadraticSpline (default: 8 bins on [-5, 5], the identity outside)."""
    kind = "SplineAutoregressive"

    def __init__(self, dim: int, hidden_width: int = 64, hidden_layers: int = 2, context_dim: int = 0,
                 order="natural", activation: str = "relu", hidden_degrees: str = "sequential", seed: int = 0,
                 spline: Optional[RationalQuadraticSpline] = None):
        super().__init__(dim, hidden_width, hidden_layers, context_dim, order, activation, hidden_degrees, seed,
                         RationalQuadraticSpline() if spline is None else spline)


class IAF(MAF):
    """nflow::IAF = Inverted<MAF>: forward is the MAF's inverse (D passes), inverse is the MAF's
    forward (one pass). Same parameters and names as the MAF ("made.layers...")."""
    kind = "IAF"

    def forward(self, x, context=None):
        return self._ar_inverse(x, context)

    def inverse(self, z, context=None):
        return self._ar_forward(z, context)


class ActNorm(_Bijector):
    """nflow::ActNorm: z = (x + bias) exp(log_scale), log|det| = sum(log_scale). ``initialize``
    is nflow's data-dependent initialisation (population variance, floor = eps of the dtype)."""
    kind = "ActNorm"

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.bias = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, batch: torch.Tensor, variance_floor: Optional[float] = None):
        if batch.shape[0] < 2:
            raise ValueError("nflow_torch.ActNorm.initialize: need at least 2 samples")
        floor = torch.finfo(self.bias.dtype).eps if variance_floor is None else variance_floor
        b = batch.double()
        mean = b.mean(0)
        var = ((b - mean) ** 2).mean(0)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-0.5 * torch.log(torch.clamp(var, min=floor)))
        self.initialized.fill_(True)

    def forward(self, x, context=None):
        return (x + self.bias) * torch.exp(self.log_scale), self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z, context=None):
        return z * torch.exp(-self.log_scale) - self.bias, (-self.log_scale.sum()).expand(z.shape[0])

    def _nflow_buffers(self):
        # nflow::ActNorm's "initialized": [1] if initialised, [0] if not (a flag only: the map is
        # (x + bias) exp(log_scale) either way, in both libraries).
        return {"initialized": _i64([1 if bool(self.initialized) else 0])}


class LULinear(_Bijector):
    """nflow::LULinear: z = W x + b, W = P L (U + diag(sign * exp(log_s))); log|det| = sum(log_s).

    Parameters "lower" (strictly lower part used), "upper" (strictly upper part used), "log_s",
    "bias". Buffers ``perm`` (row i of W is row perm[i] of L U', nflow's convention) and ``sign``,
    exported as nflow's "permutation" and "sign" (int64, +1/-1) and loaded by nflow with the
    parameters. ``self.structure_matrix()`` = P diag(sign) is what nflow's
    ``LULinear<S, D>::from_weight`` turns into the same P and signs (its LU with partial pivoting
    is exactly L = I, U = diag(sign), P), for building the C++ layer without a file."""
    kind = "LULinear"

    def __init__(self, dim: int, perm: Optional[Sequence[int]] = None, sign: Optional[Sequence[float]] = None):
        super().__init__()
        self.dim = dim
        perm = list(range(dim)) if perm is None else [int(v) for v in perm]
        if sorted(perm) != list(range(dim)):
            raise ValueError(f"nflow_torch.LULinear: perm must be a permutation of 0..{dim - 1}")
        sign = [1.0] * dim if sign is None else [float(v) for v in sign]
        if len(sign) != dim or any(abs(s) != 1.0 for s in sign):
            raise ValueError("nflow_torch.LULinear: sign must hold dim entries of +1 or -1")
        self.register_buffer("perm", torch.tensor(perm, dtype=torch.long))
        self.register_buffer("sign", torch.tensor(sign))
        self.lower = nn.Parameter(torch.zeros(dim, dim))
        self.upper = nn.Parameter(torch.zeros(dim, dim))
        self.log_s = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    @classmethod
    def from_weight(cls, w: torch.Tensor) -> "LULinear":
        """The exact factors of an invertible ``w`` by LU with partial pivoting (LAPACK getrf,
        the same pivot rule as Eigen's PartialPivLU: first largest |entry| in the column)."""
        d = w.shape[0]
        lu, piv = torch.linalg.lu_factor(w.double())
        # Row swaps -> permutation sigma with (w)[sigma[i], :] = (L U)[i, :].
        sigma = list(range(d))
        for i, p in enumerate(piv.tolist()):
            p -= 1
            sigma[i], sigma[p] = sigma[p], sigma[i]
        # nflow: row i of W is row perm[i] of L U', i.e. perm = inverse of sigma.
        perm = [0] * d
        for i, s in enumerate(sigma):
            perm[s] = i
        diag = torch.diagonal(lu)
        layer = cls(d, perm, torch.sign(diag).tolist())
        with torch.no_grad():
            layer.lower.copy_(torch.tril(lu, -1))
            layer.upper.copy_(torch.triu(lu, 1))
            layer.log_s.copy_(torch.log(diag.abs()))
        return layer.to(w.dtype)

    @classmethod
    def random_orthogonal(cls, dim: int, seed: int) -> "LULinear":
        """nflow::LULinear::random_orthogonal(dim, seed): the same Gaussian draws, Q of their QR with
        R's diagonal made positive, factored by from_weight (same P and signs as nflow's, barring
        exact pivot ties; the parameters agree to rounding and are overwritten by loading anyway)."""
        g = _standard_normal_matrix(dim, dim, MT19937_64(seed))
        q, r = torch.linalg.qr(g)
        q = q * torch.sign(torch.diagonal(r))
        layer = cls.from_weight(q)
        layer.seed = seed
        return layer

    def _factors(self):
        eye = torch.eye(self.dim, dtype=self.lower.dtype, device=self.lower.device)
        L = torch.tril(self.lower, -1) + eye
        U = torch.triu(self.upper, 1) + torch.diag(self.sign.to(self.log_s.dtype) * torch.exp(self.log_s))
        return L, U

    def weight(self) -> torch.Tensor:
        L, U = self._factors()
        return (L @ U)[self.perm]

    def structure_matrix(self) -> torch.Tensor:
        """P diag(sign): what to pass to nflow's LULinear::from_weight to get this P and sign."""
        s = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        for i, p in enumerate(self.perm.tolist()):
            s[i, p] = float(self.sign[p])
        return s

    def forward(self, x, context=None):
        return x @ self.weight().T + self.bias, self.log_s.sum().expand(x.shape[0])

    def inverse(self, z, context=None):
        L, U = self._factors()
        u = z - self.bias
        v = torch.empty_like(u)
        v[:, self.perm] = u  # P^T u
        y = torch.linalg.solve_triangular(L, v.T, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(U, y, upper=True)
        return x.T, (-self.log_s.sum()).expand(z.shape[0])

    def _nflow_tensors(self):
        return {"lower": torch.tril(self.lower, -1).detach(), "upper": torch.triu(self.upper, 1).detach(),
                "log_s": self.log_s.detach(), "bias": self.bias.detach()}

    def _nflow_buffers(self):
        # nflow::detail::LUParam: "permutation" has the same convention as ``perm`` (P's indices:
        # row i of W is row perm[i] of L U'); "sign" holds the fixed signs of U's diagonal as
        # integers (``sign`` is a floating buffer here, so that it follows the module's dtype).
        return {"permutation": _i64(self.perm), "sign": _i64(torch.sign(self.sign))}


class Reverse(_Bijector):
    """nflow::Reverse: z = x reversed, log|det| = 0."""
    kind = "Reverse"

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x, context=None):
        return torch.flip(x, [-1]), torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    inverse = forward


class Permutation(_Bijector):
    """nflow::Permutation: z_i = x_{perm[i]}, log|det| = 0. Buffer "permutation" = ``perm``."""
    kind = "Permutation"

    def __init__(self, perm: Sequence[int]):
        super().__init__()
        perm = [int(v) for v in perm]
        if sorted(perm) != list(range(len(perm))):
            raise ValueError("nflow_torch.Permutation: not a permutation")
        self.dim = len(perm)
        self.register_buffer("perm", torch.tensor(perm, dtype=torch.long))
        inv = [0] * self.dim
        for i, p in enumerate(perm):
            inv[p] = i
        self.register_buffer("inv", torch.tensor(inv, dtype=torch.long))

    @classmethod
    def random(cls, dim: int, seed: int) -> "Permutation":
        """nflow::Permutation::random(dim, seed), the same permutation."""
        p = cls(random_permutation(dim, MT19937_64(seed)))
        p.seed = seed
        return p

    def forward(self, x, context=None):
        return x[:, self.perm], torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def inverse(self, z, context=None):
        return z[:, self.inv], torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)

    def _nflow_buffers(self):
        return {"permutation": _i64(self.perm)}


class ElementwiseAffine(_Bijector):
    """nflow::ElementwiseAffine: z = x exp(log_scale) + shift, log|det| = sum(log_scale)."""
    kind = "ElementwiseAffine"

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.shift = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def forward(self, x, context=None):
        return x * torch.exp(self.log_scale) + self.shift, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z, context=None):
        return (z - self.shift) * torch.exp(-self.log_scale), (-self.log_scale.sum()).expand(z.shape[0])


class Flow(_Bijector):
    """nflow::Flow<...>: steps applied in order data -> latent; names "i." per step."""
    kind = "Flow"

    def __init__(self, *steps: nn.Module):
        super().__init__()
        if not steps:
            raise ValueError("nflow_torch.Flow: needs at least one step")
        for i, s in enumerate(steps):
            self.add_module(str(i), s)
        self.dim = steps[0].dim
        ctx = {s.context_dim for s in steps if _is_conditional(s)}
        if len(ctx) > 1:
            # nflow::Flow::validate: every conditional step takes the same context.
            raise ValueError("nflow_torch.Flow: conditional steps take different context sizes "
                             f"{sorted(ctx)} (nflow::Flow requires one; note that a Coupling always "
                             "counts as conditional in nflow, context_dim 0 included)")
        self.context_dim = ctx.pop() if ctx else 0

    def steps(self) -> List[nn.Module]:
        return list(self.children())

    def forward(self, x, context=None):
        ld = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for s in self.children():
            x, l = s(x, context)
            ld = ld + l
        return x, ld

    def inverse(self, z, context=None):
        ld = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for s in reversed(list(self.children())):
            z, l = s.inverse(z, context)
            ld = ld + l
        return z, ld

    def _nflow_tensors(self):
        out = {}
        for i, s in enumerate(self.children()):
            for k, v in s._nflow_tensors().items():
                out[f"{i}.{k}"] = v
        return out

    def _nflow_buffers(self):
        out = {}
        for i, s in enumerate(self.children()):
            for k, v in s._nflow_buffers().items():
                out[f"{i}.{k}"] = v
        return out


def _is_conditional(step) -> bool:
    # nflow: a Coupling's ContextDim is Dynamic, so it is always "conditional", and so is a
    # SplineAutoregressive (built with ContextDim = Eigen::Dynamic); a MAF is when its
    # context_dim > 0 (this bridge builds MAFs with a fixed ContextDim = context_dim).
    if isinstance(step, (_Coupling, SplineAutoregressive)):
        return True
    if isinstance(step, MAF):
        return step.context_dim > 0
    if isinstance(step, Flow):
        return any(_is_conditional(s) for s in step.children())
    return False


# ---- distributions ----------------------------------------------------------------------------

class StandardNormal(nn.Module):
    """nflow::StandardNormal: log p(z) = -|z|^2 / 2 - D log(2 pi) / 2. No parameters."""
    kind = "StandardNormal"

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("_ref", torch.zeros(()))

    def log_prob(self, z):
        return -0.5 * (z * z).sum(-1) - self.dim * HALF_LOG_TWO_PI

    def sample(self, n, generator=None):
        return torch.randn(n, self.dim, dtype=self._ref.dtype, generator=generator)

    def _nflow_tensors(self):
        return {}

    def _nflow_buffers(self):
        return {}


class DiagonalNormal(nn.Module):
    """nflow::DiagonalNormal: parameters "loc", "log_scale"."""
    kind = "DiagonalNormal"

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def log_prob(self, z):
        u = (z - self.loc) * torch.exp(-self.log_scale)
        return -0.5 * (u * u).sum(-1) - (self.log_scale.sum() + self.dim * HALF_LOG_TWO_PI)

    def sample(self, n, generator=None):
        eps = torch.randn(n, self.dim, dtype=self.loc.dtype, generator=generator)
        return eps * torch.exp(self.log_scale) + self.loc

    def _nflow_tensors(self):
        return {n: p.detach() for n, p in self.named_parameters()}

    def _nflow_buffers(self):
        return {}


class UniformBox(nn.Module):
    """nflow::UniformBox<S, D>(lower, upper): uniform on the closed box [lower, upper] (scalars or
    D values; default the unit box), the base of bounded and circular spline flows.
    log p(z) = -sum(log(upper - lower)) inside, -inf outside, NaN for a sample holding a NaN.
    No parameters and no buffers (the bounds are constructor arguments in nflow, not saved)."""
    kind = "UniformBox"

    def __init__(self, dim: int, lower=0.0, upper=1.0):
        super().__init__()
        lo = [float(lower)] * dim if isinstance(lower, (int, float)) else [float(v) for v in lower]
        hi = [float(upper)] * dim if isinstance(upper, (int, float)) else [float(v) for v in upper]
        if dim < 1 or len(lo) != dim or len(hi) != dim or not all(
                math.isfinite(a) and math.isfinite(b) and a < b for a, b in zip(lo, hi)):
            raise ValueError("nflow_torch.UniformBox: lower and upper must hold dim finite bounds with lower < upper")
        self.dim, self.bounds = dim, (lo, hi)  # as given (the buffers follow the module's dtype)
        self.register_buffer("lower", torch.tensor(lo))
        self.register_buffer("upper", torch.tensor(hi))

    def log_prob(self, z):
        inside = ((z >= self.lower) & (z <= self.upper)).all(-1)
        log_volume = torch.log(self.upper - self.lower).sum()
        lp = torch.where(inside, -log_volume, torch.full_like(z[:, 0], -math.inf))
        return torch.where(torch.isnan(z).any(-1), torch.full_like(lp, math.nan), lp)

    def sample(self, n, generator=None):
        u = torch.rand(n, self.dim, dtype=self.lower.dtype, generator=generator)
        z = self.lower + (self.upper - self.lower) * u
        # In [lower, upper): a value that rounds up to upper moves one step below (as nflow).
        return torch.where(z >= self.upper, torch.nextafter(self.upper, self.lower).expand_as(z), z)

    def _nflow_tensors(self):
        return {}

    def _nflow_buffers(self):
        return {}


class Density(nn.Module):
    """nflow::Density<Base, Transform>: log p(x) = log p_base(T(x)) + log|det dT/dx|;
    sampling x = T^{-1}(z), z ~ base. Names "base." and "transform."."""
    kind = "Density"

    def __init__(self, base: nn.Module, transform: nn.Module):
        super().__init__()
        if base.dim != transform.dim:
            raise ValueError("nflow_torch.Density: base and transform dimensions differ")
        self.base, self.transform = base, transform
        self.dim = base.dim

    def log_prob(self, x, context=None):
        z, ld = self.transform(x, context)
        return self.base.log_prob(z) + ld

    def sample(self, n: int, context=None, generator=None):
        return self.transform.inverse(self.base.sample(n, generator), context)[0]

    def sample_and_log_prob(self, n: int, context=None, generator=None):
        z = self.base.sample(n, generator)
        x, ld = self.transform.inverse(z, context)
        return x, self.base.log_prob(z) - ld

    def _nflow_tensors(self):
        out = {f"base.{k}": v for k, v in self.base._nflow_tensors().items()}
        out.update({f"transform.{k}": v for k, v in self.transform._nflow_tensors().items()})
        return out

    def _nflow_buffers(self):
        out = {f"base.{k}": v for k, v in self.base._nflow_buffers().items()}
        out.update({f"transform.{k}": v for k, v in self.transform._nflow_buffers().items()})
        return out


@torch.no_grad()
def initialize_act_norms(module: nn.Module, batch: torch.Tensor, context=None) -> torch.Tensor:
    """nflow::initialize_act_norms: push ``batch`` through step by step and initialise every
    ActNorm on the batch as it arrives there. Returns the output batch."""
    if isinstance(module, Density):
        return initialize_act_norms(module.transform, batch, context)
    if isinstance(module, ActNorm):
        module.initialize(batch)
        return module(batch)[0]
    if isinstance(module, Flow):
        for s in module.children():
            batch = initialize_act_norms(s, batch, context)
        return batch
    return module(batch, context)[0]


# ---- export -----------------------------------------------------------------------------------

def buffers_for_nflow(module: nn.Module) -> Dict[str, torch.Tensor]:
    """The buffers alone, by nflow's composed ``visit_buffers`` names, each a 1-D int64 tensor:
    "<prefix>mask" (couplings), "<prefix>made.order" and "<prefix>made.hidden_degrees.<l>" (MAF,
    IAF), "<prefix>permutation" (Permutation, LULinear), "<prefix>sign" (LULinear),
    "<prefix>initialized" (ActNorm)."""
    if not hasattr(module, "_nflow_buffers"):
        raise TypeError(f"nflow_torch.buffers_for_nflow: {type(module).__name__} is not an nflow_torch module")
    return dict(module._nflow_buffers())


def state_dict_for_nflow(module: nn.Module) -> Dict[str, torch.Tensor]:
    """Exactly the tensors nflow's ``io::load`` expects for the matching C++ object, by nflow's
    composed names: every parameter (floating, converted to the file's dtype by
    ``save_safetensors``) and every buffer (int64 vectors, written as I64; see
    ``buffers_for_nflow``). nflow's loader is strict: it needs all of them and nothing else."""
    if not hasattr(module, "_nflow_tensors") or not hasattr(module, "_nflow_buffers"):
        raise TypeError(f"nflow_torch.state_dict_for_nflow: {type(module).__name__} is not an nflow_torch module")
    out = dict(module._nflow_tensors())
    for name, b in module._nflow_buffers().items():
        if name in out:
            raise ValueError(f"nflow_torch.state_dict_for_nflow: '{name}' is both a parameter and a buffer")
        out[name] = b
    return out


_DTYPES = {"f64": ("F64", torch.float64, 8), "f32": ("F32", torch.float32, 4),
           "i64": ("I64", torch.int64, 8), "i32": ("I32", torch.int32, 4)}
_FROM_ST = {"F64": (torch.float64, "<f8"), "F32": (torch.float32, "<f4"),
            "I64": (torch.int64, "<i8"), "I32": (torch.int32, "<i4")}


def save_safetensors(tensors: Dict[str, torch.Tensor], path, dtype: str = "f64",
                     metadata: Optional[Dict[str, str]] = None) -> None:
    """Writes a safetensors file: 8-byte little-endian header length, a JSON header
    {name: {dtype, shape, data_offsets}} (plus "__metadata__"), padded with spaces to a multiple
    of 8, then the row-major little-endian data. Floating tensors are converted to ``dtype``
    ("f64" or "f32"); integer tensors keep an integer type. 8-byte types come first, then by
    name (nflow's own order), so every tensor is aligned."""
    import numpy as np

    if dtype not in ("f64", "f32"):
        raise ValueError("nflow_torch.save_safetensors: dtype must be 'f64' or 'f32'")
    entries = []
    for name, t in tensors.items():
        t = t.detach().cpu()
        if t.is_floating_point():
            key = dtype
            if not torch.isfinite(t).all():
                raise ValueError(f"nflow_torch.save_safetensors: tensor '{name}' is not finite")
        elif t.dtype in (torch.int64, torch.int32):
            key = "i64" if t.dtype == torch.int64 else "i32"
        else:
            raise TypeError(f"nflow_torch.save_safetensors: tensor '{name}' has unsupported dtype {t.dtype}")
        st, tdt, size = _DTYPES[key]
        if key == "f32":
            big = t.double().abs() > float(np.finfo(np.float32).max)
            if big.any():
                raise ValueError(f"nflow_torch.save_safetensors: tensor '{name}' is beyond the float range")
        arr = t.to(tdt).contiguous().numpy()
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        entries.append((-size, name, st, list(t.shape), arr.tobytes(order="C")))
    entries.sort(key=lambda e: (e[0], e[1]))
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for _, name, st, shape, data in entries:
        header[name] = {"dtype": st, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for e in entries:
            f.write(e[4])


def load_safetensors(path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Reads a safetensors file with F32/F64/I32/I64 tensors: (tensors, metadata)."""
    import numpy as np

    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, e in header.items():
        tdt, npdt = _FROM_ST[e["dtype"]]
        a, b = e["data_offsets"]
        arr = np.frombuffer(raw[base + a:base + b], dtype=npdt).reshape(e["shape"])
        out[name] = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("="))).clone()
    return out, meta


# ---- architecture description (checkpoints, metadata, C++ snippets) ----------------------------

def to_config(m: nn.Module) -> dict:
    """A JSON-able description of an nflow_torch module (rebuild it with ``from_config``)."""
    if isinstance(m, Density):
        return {"type": "Density", "base": to_config(m.base), "transform": to_config(m.transform)}
    if isinstance(m, Flow):
        return {"type": "Flow", "steps": [to_config(s) for s in m.children()]}
    if isinstance(m, (StandardNormal, DiagonalNormal, ActNorm, Reverse, ElementwiseAffine)):
        return {"type": m.kind, "dim": m.dim}
    if isinstance(m, _Coupling):
        c = {"type": m.kind, "dim": m.dim, "mask": m.mask, "hidden_width": m.hidden_width,
             "hidden_layers": m.hidden_layers, "context_dim": m.context_dim, "activation": m.activation}
        if isinstance(m, AffineCoupling):
            c["log_scale_bound"] = m.log_scale_bound
        if isinstance(m, SplineCoupling):
            c["spline"] = m.transformer.options()
        return c
    if isinstance(m, _MaskedAutoregressive):
        c = {"type": m.kind, "dim": m.dim, "hidden_width": m.made.hidden_width,
             "hidden_layers": m.made.hidden_layers, "context_dim": m.context_dim,
             "order": m.order_spec if isinstance(m.order_spec, str) else list(m.order),
             "activation": m.made.activation}
        if isinstance(m, MAF):
            c["log_scale_bound"] = m.log_scale_bound
        c.update({"hidden_degrees": m.made.hidden_degrees_kind, "seed": m.seed})
        if isinstance(m, SplineAutoregressive):
            c["spline"] = m.transformer.options()
        return c
    if isinstance(m, UniformBox):
        return {"type": "UniformBox", "dim": m.dim, "lower": m.bounds[0], "upper": m.bounds[1]}
    if isinstance(m, LULinear):
        c = {"type": "LULinear", "dim": m.dim, "perm": m.perm.tolist(), "sign": m.sign.tolist()}
        if getattr(m, "seed", None) is not None:
            c["seed"] = m.seed
        return c
    if isinstance(m, Permutation):
        c = {"type": "Permutation", "perm": m.perm.tolist()}
        if getattr(m, "seed", None) is not None:
            c["seed"] = m.seed
        return c
    raise TypeError(f"nflow_torch.to_config: unsupported module {type(m).__name__}")


def from_config(c: dict) -> nn.Module:
    t = c["type"]
    if t == "Density":
        return Density(from_config(c["base"]), from_config(c["transform"]))
    if t == "Flow":
        return Flow(*[from_config(s) for s in c["steps"]])
    simple = {"StandardNormal": StandardNormal, "DiagonalNormal": DiagonalNormal, "ActNorm": ActNorm,
              "Reverse": Reverse, "ElementwiseAffine": ElementwiseAffine}
    if t in simple:
        return simple[t](c["dim"])
    if t in ("AffineCoupling", "AdditiveCoupling"):
        kw = dict(mask=c["mask"], hidden_width=c["hidden_width"], hidden_layers=c["hidden_layers"],
                  context_dim=c["context_dim"], activation=c["activation"])
        if t == "AffineCoupling":
            return AffineCoupling(c["dim"], log_scale_bound=c.get("log_scale_bound", DEFAULT_LOG_SCALE_BOUND), **kw)
        return AdditiveCoupling(c["dim"], **kw)
    if t == "SplineCoupling":
        return SplineCoupling(c["dim"], c["mask"], c["hidden_width"], c["hidden_layers"], c["context_dim"],
                              c["activation"], RationalQuadraticSpline(**c["spline"]))
    if t == "SplineAutoregressive":
        return SplineAutoregressive(c["dim"], c["hidden_width"], c["hidden_layers"], c["context_dim"], c["order"],
                                    c["activation"], c["hidden_degrees"], c["seed"],
                                    RationalQuadraticSpline(**c["spline"]))
    if t == "UniformBox":
        return UniformBox(c["dim"], c["lower"], c["upper"])
    if t in ("MAF", "IAF"):
        return (MAF if t == "MAF" else IAF)(c["dim"], c["hidden_width"], c["hidden_layers"], c["context_dim"],
                                            c["order"], c["activation"], c.get("log_scale_bound", DEFAULT_LOG_SCALE_BOUND),
                                            c.get("hidden_degrees", "sequential"), c.get("seed", 0))
    if t == "LULinear":
        m = LULinear(c["dim"], c["perm"], c["sign"])
        if "seed" in c:
            m.seed = c["seed"]
        return m
    if t == "Permutation":
        m = Permutation(c["perm"])
        if "seed" in c:
            m.seed = c["seed"]
        return m
    raise ValueError(f"nflow_torch.from_config: unknown type {t!r}")


def _cpp_vector(values: Sequence[float], S: str) -> str:
    D = len(values)
    if all(v == values[0] for v in values):
        return f"Eigen::Matrix<{S}, {D}, 1>::Constant({D}, {float(values[0])!r})"
    return f"(Eigen::Matrix<{S}, {D}, 1>() << {', '.join(repr(float(v)) for v in values)}).finished()"


def _cpp_spline(spline: "RationalQuadraticSpline", S: str) -> Tuple[str, str]:
    """The C++ type of ``spline`` and its construction ("" when every option is the default)."""
    enum, (lo, hi) = SPLINE_DOMAINS[spline.domain]
    t = f"nflow::RationalQuadraticSpline<{S}, {spline.bins}>" if spline.domain == "unbounded" else \
        f"nflow::RationalQuadraticSpline<{S}, {spline.bins}, {enum}>"
    given = [(".lower", spline.lower, lo), (".upper", spline.upper, hi),
             (".min_bin_width", spline.min_bin_width, DEFAULT_SPLINE_MINIMUM),
             (".min_bin_height", spline.min_bin_height, DEFAULT_SPLINE_MINIMUM),
             (".min_derivative", spline.min_derivative, DEFAULT_SPLINE_MINIMUM)]
    opts = [f"{k} = {v!r}" for k, v, default in given if v != default]  # SplineOptions' order
    return t, (f"{t}({{{', '.join(opts)}}})" if opts else "")


def _cpp_type_and_ctor(m: nn.Module, S: str) -> Tuple[str, str]:
    D = m.dim
    if isinstance(m, Density):
        bt, bc = _cpp_type_and_ctor(m.base, S)
        tt, tc = _cpp_type_and_ctor(m.transform, S)
        return f"nflow::Density<{bt}, {tt}>", f"nflow::Density({bc},\n    {tc})"
    if isinstance(m, Flow):
        parts = [_cpp_type_and_ctor(s, S) for s in m.children()]
        t = "nflow::Flow<" + ", ".join(p[0] for p in parts) + ">"
        return t, "nflow::Flow(\n    " + ",\n    ".join(p[1] for p in parts) + ")"
    if isinstance(m, (StandardNormal, DiagonalNormal, ActNorm, Reverse, ElementwiseAffine)):
        t = f"nflow::{m.kind}<{S}, {D}>"
        return t, f"{t}({D})"
    if isinstance(m, UniformBox):
        t = f"nflow::UniformBox<{S}, {D}>"
        lo, hi = m.bounds
        if lo == [0.0] * D and hi == [1.0] * D:
            return t, f"{t}({D})"
        return t, f"{t}({_cpp_vector(lo, S)}, {_cpp_vector(hi, S)})"
    if isinstance(m, _Coupling):
        act = ACTIVATIONS[m.activation][1]
        t = f"nflow::{m.kind}<{S}, {D}, Eigen::Dynamic, {act}>"
        if isinstance(m, SplineCoupling):
            spline_type, spline_ctor = _cpp_spline(m.transformer, S)
            t = f"nflow::Coupling<{spline_type}, {D}, Eigen::Dynamic, {act}>"
        if m.mask == half_mask(D):
            mask = f"nflow::CouplingMask::half({D})"
        elif m.mask == half_mask(D, True):
            mask = f"nflow::CouplingMask::half({D}, true)"
        elif m.mask == alternating_mask(D):
            mask = f"nflow::CouplingMask::alternating({D})"
        elif m.mask == alternating_mask(D, True):
            mask = f"nflow::CouplingMask::alternating({D}, true)"
        else:
            mask = "nflow::CouplingMask(std::vector<bool>{" + ", ".join("true" if v else "false" for v in m.mask) + "})"
        opts = f"{{.hidden_width = {m.hidden_width}, .hidden_layers = {m.hidden_layers}, .context_dim = {m.context_dim}}}"
        extra = ""
        if isinstance(m, AffineCoupling) and m.log_scale_bound != DEFAULT_LOG_SCALE_BOUND:
            extra = f", nflow::AffineTransformer<{S}>({m.log_scale_bound!r})"
        if isinstance(m, SplineCoupling) and spline_ctor:
            extra = f", {spline_ctor}"
        return t, f"{t}({mask}, {opts}{extra})"
    if isinstance(m, _MaskedAutoregressive):
        act = ACTIVATIONS[m.made.activation][1]
        if isinstance(m, MAF):
            maf = f"nflow::MAF<{S}, {D}, Eigen::Dynamic, {act}, {m.context_dim}>"
        else:
            spline_type, spline_ctor = _cpp_spline(m.transformer, S)
            maf = f"nflow::MaskedAutoregressive<{spline_type}, {D}, Eigen::Dynamic, {act}, Eigen::Dynamic>"
        if m.order_spec == "natural":
            order = ".order = nflow::nn::InputOrder::Natural"
        elif m.order_spec == "reversed":
            order = ".order = nflow::nn::InputOrder::Reversed"
        elif m.order_spec == "random":
            order = ".order = nflow::nn::InputOrder::Random"
        else:
            order = ".custom_order = (Eigen::VectorXi(%d) << %s).finished()" % (D, ", ".join(map(str, m.order)))
        if m.made.hidden_degrees_kind == "random":
            order += ", .hidden_degrees = nflow::nn::HiddenDegrees::Random"
        if m.order_spec == "random" or m.made.hidden_degrees_kind == "random":
            order += f", .seed = {m.seed}"
        opts = (f"{{.hidden_width = {m.made.hidden_width}, .hidden_layers = {m.made.hidden_layers}, "
                f".context_dim = {m.context_dim}, {order}}}")
        extra = ""
        if isinstance(m, MAF) and m.log_scale_bound != DEFAULT_LOG_SCALE_BOUND:
            extra = f", nflow::AffineTransformer<{S}>({m.log_scale_bound!r})"
        if isinstance(m, SplineAutoregressive) and spline_ctor:
            extra = f", {spline_ctor}"
        ctor = f"{maf}({D}, {opts}{extra})"
        if isinstance(m, IAF):
            return f"nflow::Inverted<{maf}>", f"nflow::Inverted<{maf}>({ctor})"
        return maf, ctor
    if isinstance(m, LULinear):
        t = f"nflow::LULinear<{S}, {D}>"
        if getattr(m, "seed", None) is not None:
            return t, f"{t}::random_orthogonal({D}, {m.seed})"
        if m.perm.tolist() == list(range(D)) and all(s == 1.0 for s in m.sign.tolist()):
            return t, f"{t}({D})"
        s = m.structure_matrix()
        vals = ", ".join(repr(float(v)) for v in s.reshape(-1).tolist())
        return t, f"{t}::from_weight((Eigen::Matrix<{S}, {D}, {D}, Eigen::RowMajor>() << {vals}).finished())"
    if isinstance(m, Permutation):
        t = f"nflow::Permutation<{S}, {D}>"
        if getattr(m, "seed", None) is not None:
            return t, f"{t}::random({D}, {m.seed})"
        return t, f"{t}((Eigen::VectorXi({D}) << {', '.join(map(str, m.perm.tolist()))}).finished())"
    raise TypeError(f"nflow_torch.cpp_snippet: unsupported module {type(m).__name__}")


def cpp_snippet(m: nn.Module, scalar: str = "double") -> str:
    """C++ that builds the nflow object matching ``m`` and loads the exported file into it. The
    constructors already build the same structure; loading also sets every buffer (masks, orders,
    degrees, permutations, P and signs, ActNorm's initialised flag) from the file."""
    t, ctor = _cpp_type_and_ctor(m, scalar)
    lines = [f"using Model = {t};", f"Model model = {ctor};", 'nflow::io::load(model, "model.safetensors");']
    return "\n".join(lines)


def nflow_metadata(m: nn.Module) -> Dict[str, str]:
    """``__metadata__`` entries describing the architecture (for humans and tools)."""
    return {"nflow_torch.architecture": json.dumps(to_config(m), separators=(",", ":"))}
