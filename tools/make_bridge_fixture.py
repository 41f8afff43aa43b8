#!/usr/bin/env python3
"""Regenerates the PyTorch-bridge fixtures in tests/data/bridge/ (checked by
tests/interop/bridge_test.cpp):

  realnvp_maf.safetensors      Density<StandardNormal, Flow<AffineCoupling, Reverse, MAF (natural),
                               MAF (reversed), ActNorm, LULinear (P != I), IAF (custom order)>>,
                               unconditional, parameters in F64 and buffers (coupling masks, MADE
                               orders and hidden degrees, LU permutation and signs, ActNorm's
                               initialised flag) in I64, by nflow's names
  realnvp_maf_f32.safetensors  the same parameters in F32 (buffers in I64)
  conditional.safetensors      Density<DiagonalNormal, Flow<AffineCoupling (context 2), Reverse,
                               MAF (context 2), AdditiveCoupling (alternating, tanh, context 2),
                               MAF (reversed, ELU, no context), ActNorm, LULinear (identity),
                               Permutation, ElementwiseAffine>>
  random_structures.safetensors
                               Density<StandardNormal, Flow<MAF (Random order, Random hidden degrees,
                               seed 11), Permutation::random(4, 5), LULinear::random_orthogonal(4, 9),
                               MAF (natural order, Random hidden degrees, seed 3)>>: nflow's seeded
                               structures, reproduced from the seeds by the bridge
  spline.safetensors           Density<StandardNormal, Flow<Coupling<RationalQuadraticSpline<4>>
                               (half mask), Permutation, MaskedAutoregressive<RationalQuadraticSpline<4>>
                               (reversed order)>>: a neural spline flow mixing a coupling and an
                               autoregressive layer, unconditional
  spline_conditional.safetensors
                               the same types with a context of 2 rows, splines on [-4, 4] with
                               min_derivative 0.01, a seeded random autoregressive order
  spline_box.safetensors       Density<UniformBox on [-pi, pi]^3, Flow<Coupling<RationalQuadraticSpline<4,
                               Circular>>, Permutation, MaskedAutoregressive<RationalQuadraticSpline<4,
                               Bounded> on [-pi, pi]>>, trained on angles
  <name>_io.safetensors        inputs and PyTorch's outputs, batch-first: x [N, 4] (+ context
                               [N, 2]), log_prob [N], z [N, 4], logabsdet [N], eps [M, 4],
                               x_from_eps [M, 4], inverse_logabsdet [M], lu_structure [4, 4]
                               (P diag(sign) of the LULinear step, for LULinear::from_weight);
                               random_structures_io also holds the structures the bridge derived
                               from the seeds (maf0.order, maf0.hidden_degrees.0/1,
                               maf3.hidden_degrees.0/1, perm, lu.perm, lu.sign) for the C++ test;
                               the spline files hold points on the spline bounds and, for
                               spline_box, x_tails [T, 3] outside the box (tails, other periods)
                               with their z_tails and logabsdet_tails (their log_prob is -inf)

Each model is trained for a few hundred Adam steps (float64) on a toy data set so that its
parameters are far from their initial values. Deterministic: fixed torch seed, one thread.

Usage: python3 tools/make_bridge_fixture.py [--out tests/data/bridge] [--steps 300]
(Debian's /usr/bin/python3 with python3-torch; PyTorch >= 1.13.)
"""

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nflow_torch as nt  # noqa: E402


def toy_data(n, gen, conditional):
    a = torch.randn(n, 4, generator=gen)
    if conditional:
        c = torch.randn(n, 2, generator=gen)
        x0 = a[:, 0] + c[:, 0]
        x1 = 0.5 * a[:, 1] + 0.5 * x0 ** 2 - c[:, 1]
        x2 = torch.sin(x1) + 0.3 * a[:, 2] + 0.5 * c[:, 0] * c[:, 1]
        x3 = 0.5 * x0 * x2 + 0.2 * a[:, 3]
        return torch.stack([x0, x1, x2, x3], 1), c
    x0 = a[:, 0]
    x1 = 0.5 * a[:, 1] + 0.5 * x0 ** 2 - 1.0
    x2 = torch.sin(2 * x1) + 0.3 * a[:, 2]
    x3 = 0.5 * x0 * x2 + 0.2 * a[:, 3] + 2.0
    return torch.stack([x0, x1, x2, x3], 1), None


def angle_data(n, gen):
    """Correlated angles on [-pi, pi)^3."""
    wrap = lambda v: torch.remainder(v + math.pi, 2 * math.pi) - math.pi  # noqa: E731
    a = torch.randn(n, 3, generator=gen)
    x0 = wrap(1.0 + 0.6 * a[:, 0])
    x1 = wrap(x0 + 2.0 + 0.4 * a[:, 1])
    x2 = torch.tanh(x0 + 0.3 * a[:, 2]) * 2.5
    return torch.stack([x0, x1, x2], 1)


def build_spline(kind):
    if kind == "spline_box":
        box = nt.RationalQuadraticSpline(4, "bounded", -math.pi, math.pi)
        return nt.Density(nt.UniformBox(3, -math.pi, math.pi), nt.Flow(
            nt.SplineCoupling(3, nt.half_mask(3), 8, 2, spline=nt.RationalQuadraticSpline(4, "circular")),
            nt.Permutation([2, 0, 1]),
            nt.SplineAutoregressive(3, 8, 2, order="natural", spline=box)))
    conditional = kind == "spline_conditional"
    spline = nt.RationalQuadraticSpline(4, lower=-4.0, upper=4.0, min_derivative=1e-2) if conditional else \
        nt.RationalQuadraticSpline(4)
    ctx = 2 if conditional else 0
    return nt.Density(nt.StandardNormal(4), nt.Flow(
        nt.SplineCoupling(4, nt.half_mask(4), 8, 2, context_dim=ctx, spline=spline),
        nt.Permutation([3, 1, 0, 2]),
        nt.SplineAutoregressive(4, 8, 2, context_dim=ctx, order="random" if conditional else "reversed", seed=3,
                                spline=spline)))


def build(kind, gen):
    if kind.startswith("spline"):
        return build_spline(kind)
    if kind == "random_structures":
        flow = nt.Flow(
            nt.MAF(4, hidden_width=12, hidden_layers=2, order="random", hidden_degrees="random", seed=11),
            nt.Permutation.random(4, 5),
            nt.LULinear.random_orthogonal(4, 9),
            nt.MAF(4, hidden_width=12, hidden_layers=2, order="natural", hidden_degrees="random", seed=3),
        )
        return nt.Density(nt.StandardNormal(4), flow)
    conditional = kind == "conditional"
    if not conditional:
        w, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen))
        lu = nt.LULinear.from_weight(w)
        flow = nt.Flow(
            nt.AffineCoupling(4, nt.half_mask(4), hidden_width=16, hidden_layers=2),
            nt.Reverse(4),
            nt.MAF(4, hidden_width=16, hidden_layers=2, order="natural"),
            nt.MAF(4, hidden_width=16, hidden_layers=2, order="reversed"),
            nt.ActNorm(4),
            lu,
            nt.IAF(4, hidden_width=8, hidden_layers=1, order=[2, 0, 3, 1]),
        )
        return nt.Density(nt.StandardNormal(4), flow)
    flow = nt.Flow(
        nt.AffineCoupling(4, nt.half_mask(4), hidden_width=16, hidden_layers=2, context_dim=2),
        nt.Reverse(4),
        nt.MAF(4, hidden_width=16, hidden_layers=2, context_dim=2, order="natural"),
        nt.AdditiveCoupling(4, nt.alternating_mask(4), hidden_width=16, hidden_layers=2, context_dim=2,
                            activation="tanh"),
        nt.MAF(4, hidden_width=16, hidden_layers=2, order="reversed", activation="elu"),
        nt.ActNorm(4),
        nt.LULinear(4),
        nt.Permutation([2, 0, 3, 1]),
        nt.ElementwiseAffine(4),
    )
    return nt.Density(nt.DiagonalNormal(4), flow)


def train(model, data, ctx, steps, gen):
    nt.initialize_act_norms(model, data[:512], None if ctx is None else ctx[:512])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    n = data.shape[0]
    for step in range(steps):
        idx = torch.randint(0, n, (256,), generator=gen)
        loss = -model.log_prob(data[idx], None if ctx is None else ctx[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  step {step:4d}  nll {loss.item():.4f}")
    return model


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "bridge"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--only", nargs="*", default=None, help="regenerate only these fixtures")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)

    for name, conditional, seed in (("realnvp_maf", False, 20261129), ("conditional", True, 7),
                                    ("random_structures", False, 3), ("spline", False, 17),
                                    ("spline_conditional", True, 18), ("spline_box", False, 19)):
        if args.only is not None and name not in args.only:
            continue
        print(name)
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        if name == "spline_box":
            data, ctx = angle_data(4096, gen), None
        else:
            data, ctx = toy_data(4096, gen, conditional)
        model = train(build(name, gen), data, ctx, args.steps, gen)
        model.eval()

        tensors = nt.state_dict_for_nflow(model)
        meta = nt.nflow_metadata(model)
        meta["generator"] = "tools/make_bridge_fixture.py"
        nt.save_safetensors(tensors, os.path.join(args.out, f"{name}.safetensors"), "f64", meta)
        if name == "realnvp_maf":
            nt.save_safetensors(tensors, os.path.join(args.out, f"{name}_f32.safetensors"), "f32", meta)

        # Inputs: held-out data and a few far-out points (saturated log-scales, extrapolation;
        # for the splines, their tails), and points on the spline bounds.
        io = {}
        if name == "spline_box":
            pi = math.pi
            x = torch.cat([angle_data(24, gen), torch.tensor(
                [[-pi, pi, 0.5], [pi, -pi, -pi], [0.1, pi, pi], [-pi, -pi, -pi], [pi, pi, pi]])])
            io["x_tails"] = torch.tensor([[4.0, -0.2, 0.3], [0.2, -3.5, 3.3], [-7.0, 9.0, -12.0], [1.0, 2.0, 3.5]])
            eps = torch.cat([-pi + 2 * pi * torch.rand(16, 3, generator=gen), torch.tensor(
                [[-pi, -pi, -pi], [pi, pi, pi], [pi, -pi, 0.0], [5.0, -4.0, 0.5]])])
            c = ce = None
        else:
            xt, ct = toy_data(24, gen, conditional)
            xf = 3.0 * torch.randn(8, 4, generator=gen)
            x = torch.cat([xt, xf])
            c = None if ctx is None else torch.cat([ct, 2.0 * torch.randn(8, 2, generator=gen)])
            if name.startswith("spline"):  # points on the splines' bounds
                edge = 4.0 if conditional else 5.0
                x = torch.cat([x, torch.tensor([[-edge, edge, -edge, edge], [edge, -edge, edge, -edge]])])
                c = None if c is None else torch.cat([c, torch.randn(2, 2, generator=gen)])
            eps = torch.randn(16, 4, generator=gen)
            ce = None if ctx is None else torch.randn(16, 2, generator=gen)
        with torch.no_grad():
            z, ld = model.transform(x, c)
            lp = model.log_prob(x, c)
            xe, ild = model.transform.inverse(eps, ce)
            # Self-checks of the PyTorch modules: inverse(forward(x)) = x, log-dets cancel.
            xr, ldr = model.transform.inverse(z, c)
            assert torch.allclose(xr, x, atol=1e-9, rtol=1e-9), (xr - x).abs().max()
            assert torch.allclose(ldr, -ld, atol=1e-9)
            if "x_tails" in io:
                io["z_tails"], io["logabsdet_tails"] = model.transform(io["x_tails"])
        io.update({"x": x, "log_prob": lp, "z": z, "logabsdet": ld, "eps": eps, "x_from_eps": xe,
                   "inverse_logabsdet": ild})
        lu = [s for s in model.transform.children() if isinstance(s, nt.LULinear)]
        if lu:
            io["lu_structure"] = lu[0].structure_matrix()
        if name == "random_structures":
            steps = list(model.transform.children())
            as_i64 = lambda v: torch.tensor(v, dtype=torch.int64)  # noqa: E731
            io["maf0.order"] = as_i64(steps[0].order)
            io["perm"] = steps[1].perm
            io["lu.perm"] = steps[2].perm
            io["lu.sign"] = steps[2].sign
            for i in (0, 3):
                for l in range(2):
                    io[f"maf{i}.hidden_degrees.{l}"] = as_i64(steps[i].made.hidden_degrees[l])
        if c is not None:
            io["context"] = c
            io["eps_context"] = ce
        nt.save_safetensors(io, os.path.join(args.out, f"{name}_io.safetensors"), "f64",
                            {"generator": "tools/make_bridge_fixture.py"})
        print("  log_prob range", lp.min().item(), lp.max().item())


if __name__ == "__main__":
    main()
