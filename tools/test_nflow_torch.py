#!/usr/bin/env python3
"""Self-tests of tools/nflow_torch.py (PyTorch side only; the C++ parity is
tests/interop/bridge_test.cpp). Run: python3 tools/test_nflow_torch.py  (unittest, no pytest)."""

import json
import math
import os
import struct
import sys
import tempfile
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nflow_torch as nt  # noqa: E402

torch.set_default_dtype(torch.float64)


def perturb(module, scale=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


def layers(ctx=0):
    c = dict(context_dim=ctx)
    out = [
        nt.AffineCoupling(5, nt.half_mask(5), 8, 2, **c),
        nt.AffineCoupling(5, nt.alternating_mask(5, True), 8, 1, activation="tanh", **c),
        nt.AdditiveCoupling(5, [True, False, True, True, False], 8, 2, activation="silu", **c),
        nt.MAF(5, 8, 2, order="natural", **c),
        nt.MAF(5, 8, 2, order="reversed", activation="elu", **c),
        nt.MAF(5, 8, 1, order=[3, 1, 4, 0, 2], **c),
        nt.MAF(5, 8, 2, order="random", hidden_degrees="random", seed=4, **c),
        nt.MAF(5, 8, 0, order="reversed", **c),
        nt.IAF(5, 8, 2, order="reversed", **c),
        nt.SplineCoupling(5, nt.half_mask(5), 8, 2, **c),
        nt.SplineCoupling(5, nt.alternating_mask(5), 8, 1, activation="tanh",
                          spline=nt.RationalQuadraticSpline(3, "bounded", -2.0, 1.5, 0.05, 0.02, 0.1), **c),
        nt.SplineAutoregressive(5, 8, 2, order="reversed", **c),
        nt.SplineAutoregressive(5, 8, 2, order="random", seed=2,
                                spline=nt.RationalQuadraticSpline(4, "circular", -1.0, 2.0), **c),
    ]
    if ctx == 0:
        out += [nt.ActNorm(5), nt.LULinear(5), nt.LULinear.random_orthogonal(5, 2), nt.Reverse(5),
                nt.Permutation([4, 0, 3, 1, 2]), nt.Permutation.random(5, 8), nt.ElementwiseAffine(5)]
    return out


class BridgeTest(unittest.TestCase):
    def test_mt19937_64_matches_cpp(self):
        g = nt.MT19937_64()
        for _ in range(9999):
            g()
        self.assertEqual(g(), 9981545732273789042)  # the C++ standard's check value

    def test_inverse_and_log_dets(self):
        x = torch.randn(7, 5)
        for ctx in (0, 3):
            c = torch.randn(7, 3) if ctx else None
            for layer in layers(ctx):
                perturb(layer)
                with self.subTest(layer=type(layer).__name__, ctx=ctx):
                    z, ld = layer(x, c)
                    xr, ild = layer.inverse(z, c)
                    self.assertLess((xr - x).abs().max().item(), 1e-10)
                    self.assertLess((ld + ild).abs().max().item(), 1e-10)
                    # log-det against autograd's Jacobian, sample 0
                    c0 = None if c is None else c[:1]
                    jac = torch.autograd.functional.jacobian(lambda v: layer(v.unsqueeze(0), c0)[0][0], x[0])
                    self.assertAlmostEqual(torch.linalg.slogdet(jac)[1].item(), ld[0].item(), places=9)

    def test_made_is_autoregressive_in_its_order(self):
        spline = nt.RationalQuadraticSpline(2, "bounded")  # 6 parameters per dimension
        for ctx in (0, 2):
            for spec in ("natural", "reversed", [2, 0, 3, 1], "random"):
                maf = perturb(nt.MAF(4, 6, 2, context_dim=ctx, order=spec, hidden_degrees="random", seed=1))
                ar = perturb(nt.SplineAutoregressive(4, 6, 2, ctx, spec, hidden_degrees="random", seed=1, spline=spline))
                self.assert_autoregressive(maf, ctx)
                self.assert_autoregressive(ar, ctx)

    def assert_autoregressive(self, layer, ctx):
        # Output row r of the MADE belongs to dimension r % D and depends only on earlier ones.
        c = torch.randn(1, 2) if ctx else None
        jac = torch.autograd.functional.jacobian(lambda v: layer.made(v.unsqueeze(0), c)[0], torch.randn(4))
        deg = layer.made.input_degrees
        self.assertEqual(jac.shape[0], 4 * layer.transformer.params_per_dim)
        for r in range(jac.shape[0]):
            for j in range(4):
                if deg[j] >= deg[r % 4]:
                    self.assertEqual(jac[r, j].item(), 0.0)

    def test_lu_from_weight_and_structure(self):
        w = torch.randn(6, 6, generator=torch.Generator().manual_seed(3))
        lu = nt.LULinear.from_weight(w)
        self.assertLess((lu.weight() - w).abs().max().item(), 1e-12)
        s = lu.structure_matrix()
        # P diag(sign) has exactly the identity factors and the same P, sign.
        lu2 = nt.LULinear.from_weight(s)
        self.assertEqual(lu2.perm.tolist(), lu.perm.tolist())
        self.assertEqual(lu2.sign.tolist(), lu.sign.tolist())
        self.assertEqual(lu2.lower.abs().max().item(), 0.0)

    def test_safetensors_format(self):
        t = {"b": torch.arange(3.0), "a.weight": torch.randn(2, 3), "i": torch.tensor([1, 2], dtype=torch.int32)}
        with tempfile.TemporaryDirectory() as d:
            for dtype in ("f64", "f32"):
                path = os.path.join(d, "t.safetensors")
                nt.save_safetensors(t, path, dtype, {"k": "v"})
                with open(path, "rb") as f:
                    raw = f.read()
                (n,) = struct.unpack("<Q", raw[:8])
                self.assertEqual(n % 8, 0)
                header = json.loads(raw[8:8 + n])
                self.assertEqual(header["a.weight"]["shape"], [2, 3])
                self.assertEqual(header["b"]["dtype"], dtype.upper())
                back, meta = nt.load_safetensors(path)
                self.assertEqual(meta, {"k": "v"})
                for k in t:
                    self.assertTrue(torch.allclose(back[k].double(), t[k].double(), atol=1e-6))
            with self.assertRaises(ValueError):
                nt.save_safetensors({"x": torch.tensor([float("nan")])}, path)

    def test_names_config_round_trip_and_snippet(self):
        model = nt.Density(nt.DiagonalNormal(4), nt.Flow(
            nt.AffineCoupling(4, hidden_width=8, hidden_layers=2, context_dim=2), nt.Reverse(4),
            nt.MAF(4, 8, 2, context_dim=2, order="random", seed=5), nt.ActNorm(4), nt.LULinear.random_orthogonal(4, 1)))
        names = set(nt.state_dict_for_nflow(model))
        self.assertIn("base.loc", names)
        self.assertIn("transform.0.conditioner.layers.0.context_weight", names)
        self.assertIn("transform.2.made.layers.2.bias", names)
        self.assertIn("transform.4.log_s", names)
        rebuilt = nt.from_config(json.loads(json.dumps(nt.to_config(model))))
        rebuilt.load_state_dict(model.state_dict())
        self.assertEqual(set(nt.state_dict_for_nflow(rebuilt)), names)
        x, c = torch.randn(5, 4), torch.randn(5, 2)
        self.assertTrue(torch.equal(rebuilt.log_prob(x, c), model.log_prob(x, c)))
        snippet = nt.cpp_snippet(model)
        self.assertIn(".order = nflow::nn::InputOrder::Random, .seed = 5", snippet)
        self.assertIn("LULinear<double, 4>::random_orthogonal(4, 1)", snippet)
        # ActNorm's initialised flag is a buffer in the file now: nothing to set after loading.
        self.assertNotIn("set_initialized", snippet)
        self.assertIn("transform.2.made.order", names)
        self.assertIn("transform.3.initialized", names)

    def test_spline_models_config_names_and_snippet(self):
        bounded = nt.RationalQuadraticSpline(5, "bounded", -2.0, 3.0, min_bin_width=0.01, min_derivative=0.05)
        model = nt.Density(nt.UniformBox(3, -2.0, [3.0, 3.0, 3.0]), nt.Flow(
            nt.SplineCoupling(3, nt.alternating_mask(3), 8, 2, context_dim=2, activation="tanh", spline=bounded),
            nt.Permutation([2, 0, 1]),
            nt.SplineAutoregressive(3, 8, 1, context_dim=2, order="random", seed=4, spline=bounded)))
        perturb(model)
        names = set(nt.state_dict_for_nflow(model))
        self.assertEqual({n for n in names if not n.startswith("transform.0.conditioner.layers.")
                          and not n.startswith("transform.2.made.layers.")},
                         {"transform.0.mask", "transform.1.permutation", "transform.2.made.order",
                          "transform.2.made.hidden_degrees.0"})
        self.assertEqual(tuple(nt.state_dict_for_nflow(model)["transform.2.made.layers.1.bias"].shape), (3 * 16,))  # P = 2K + K + 1
        rebuilt = nt.from_config(json.loads(json.dumps(nt.to_config(model))))
        rebuilt.load_state_dict(model.state_dict())
        x, c = 0.5 + 2.0 * torch.rand(6, 3), torch.randn(6, 2)
        self.assertTrue(torch.equal(rebuilt.log_prob(x, c), model.log_prob(x, c)))
        self.assertEqual(nt.to_config(rebuilt), nt.to_config(model))
        snippet = nt.cpp_snippet(model)
        spline = ("nflow::RationalQuadraticSpline<double, 5, nflow::SplineDomain::Bounded>({.lower = -2.0, "
                  ".upper = 3.0, .min_bin_width = 0.01, .min_derivative = 0.05})")
        self.assertIn("nflow::Coupling<nflow::RationalQuadraticSpline<double, 5, nflow::SplineDomain::Bounded>, 3, "
                      "Eigen::Dynamic, nflow::nn::Tanh>(nflow::CouplingMask::alternating(3), {.hidden_width = 8, "
                      f".hidden_layers = 2, .context_dim = 2}}, {spline})", snippet)
        self.assertIn("nflow::MaskedAutoregressive<nflow::RationalQuadraticSpline<double, 5, "
                      "nflow::SplineDomain::Bounded>, 3, Eigen::Dynamic, nflow::nn::ReLU, Eigen::Dynamic>(3, "
                      "{.hidden_width = 8, .hidden_layers = 1, .context_dim = 2, .order = "
                      f"nflow::nn::InputOrder::Random, .seed = 4}}, {spline})", snippet)
        self.assertIn("nflow::UniformBox<double, 3>(Eigen::Matrix<double, 3, 1>::Constant(3, -2.0), "
                      "Eigen::Matrix<double, 3, 1>::Constant(3, 3.0))", snippet)
        # Defaults print no options; the unit box is UniformBox(D); float uses float types.
        plain = nt.Density(nt.UniformBox(2), nt.Flow(nt.SplineCoupling(2, spline=nt.RationalQuadraticSpline(3, "circular"))))
        snippet = nt.cpp_snippet(plain, "float")
        self.assertIn("nflow::UniformBox<float, 2>(2)", snippet)
        self.assertIn("nflow::Coupling<nflow::RationalQuadraticSpline<float, 3, nflow::SplineDomain::Circular>, 2, "
                      "Eigen::Dynamic, nflow::nn::ReLU>(nflow::CouplingMask::half(2), {.hidden_width = 64, "
                      ".hidden_layers = 2, .context_dim = 0})", snippet)
        # A spline autoregressive layer counts as conditional (run-time context), like a coupling.
        with self.assertRaises(ValueError):
            nt.Flow(nt.SplineAutoregressive(3, 8, 1), nt.MAF(3, 8, 1, context_dim=2))
        nt.Flow(nt.SplineAutoregressive(3, 8, 1), nt.MAF(3, 8, 1))

    def test_exported_buffers_names_and_values(self):
        # One flow with every layer type; the expected values follow nflow's conventions
        # (include/nflow/core/buffers.hpp and the layers' visit_buffers).
        D = 5
        lu_perm, lu_sign = [2, 0, 4, 1, 3], [1, -1, 1, -1, -1]
        structure = torch.zeros(D, D)
        for i, p in enumerate(lu_perm):
            structure[i, p] = float(lu_sign[p])
        lu = nt.LULinear.from_weight(structure)
        fresh_act_norm = nt.ActNorm(D)
        model = nt.Density(nt.DiagonalNormal(D), nt.Flow(
            nt.AffineCoupling(D, nt.half_mask(D), 8, 2),                              # 0
            nt.AdditiveCoupling(D, [True, False, True, True, False], 8, 1),           # 1
            nt.MAF(D, 8, 2, order=[3, 1, 4, 0, 2]),                                   # 2
            nt.MAF(D, 6, 2, order="random", hidden_degrees="random", seed=4),         # 3
            nt.IAF(D, 8, 1, order="reversed"),                                        # 4
            nt.MAF(D, 8, 0),                                                          # 5
            nt.ActNorm(D),                                                            # 6
            fresh_act_norm,                                                           # 7
            lu,                                                                       # 8
            nt.Permutation([4, 0, 3, 1, 2]),                                          # 9
            nt.Reverse(D),                                                            # 10
            nt.ElementwiseAffine(D)))                                                 # 11
        perturb(model)
        steps = list(model.transform.children())
        steps[6].initialize(torch.randn(64, D))
        seq = [1, 1, 2, 2, 3, 3, 4, 4]  # Sequential degrees, H = 8, D = 5, no context: 1..4 cycled
        expected = {
            "transform.0.mask": [0, 0, 1, 1, 1],
            "transform.1.mask": [1, 0, 1, 1, 0],
            "transform.2.made.order": [3, 1, 4, 0, 2],
            "transform.2.made.hidden_degrees.0": seq,
            "transform.2.made.hidden_degrees.1": seq,
            "transform.3.made.order": steps[3].order,
            "transform.3.made.hidden_degrees.0": steps[3].made.hidden_degrees[0],
            "transform.3.made.hidden_degrees.1": steps[3].made.hidden_degrees[1],
            "transform.4.made.order": [4, 3, 2, 1, 0],
            "transform.4.made.hidden_degrees.0": seq,
            "transform.5.made.order": [0, 1, 2, 3, 4],
            "transform.6.initialized": [1],
            "transform.7.initialized": [0],
            "transform.8.permutation": lu_perm,
            "transform.8.sign": lu_sign,
            "transform.9.permutation": [4, 0, 3, 1, 2],
        }
        buffers = nt.buffers_for_nflow(model)
        self.assertEqual(set(buffers), set(expected))
        for name, values in expected.items():
            with self.subTest(buffer=name):
                b = buffers[name]
                self.assertEqual(b.dtype, torch.int64)
                self.assertEqual(b.dim(), 1)
                self.assertEqual(b.tolist(), list(values))

        # state_dict_for_nflow = parameters + buffers, disjoint.
        full = nt.state_dict_for_nflow(model)
        params = model._nflow_tensors()
        self.assertEqual(set(full), set(params) | set(buffers))
        self.assertFalse(set(params) & set(buffers))

        # The random MADE: a permutation, ascending degrees in nflow's allowed ranges.
        made = steps[3].made
        self.assertEqual(sorted(buffers["transform.3.made.order"].tolist()), list(range(D)))
        lo = 1
        for l in range(2):
            deg = buffers[f"transform.3.made.hidden_degrees.{l}"].tolist()
            self.assertEqual(deg, sorted(deg))
            self.assertGreaterEqual(deg[0], lo)
            self.assertLessEqual(deg[-1], D - 1)
            lo = deg[0]

        # The masks nflow rebuilds from the exported order and degrees are the MADEs' own.
        for i in (2, 3, 4, 5):
            made = steps[i].made
            order = buffers[f"transform.{i}.made.order"].tolist()
            in_deg = [0] * D
            for k, d in enumerate(order):
                in_deg[d] = k + 1
            hidden = [buffers[f"transform.{i}.made.hidden_degrees.{l}"].tolist() for l in range(made.hidden_layers)]
            for l, layer in enumerate(made.layers):
                cin = in_deg if l == 0 else hidden[l - 1]
                rows, cols = layer.mask.shape
                for r in range(rows):
                    for c in range(cols):
                        allowed = in_deg[r % D] > cin[c] if l == made.hidden_layers else hidden[l][r] >= cin[c]
                        self.assertEqual(layer.mask[r, c].item(), 1.0 if allowed else 0.0, (i, l, r, c))

        # LULinear: W = P L U' with row i of W = row permutation[i] of L U' and U's diagonal
        # sign * exp(log_s), rebuilt from the exported tensors alone, is the layer's map.
        pre = "transform.8."
        L = full[pre + "lower"] + torch.eye(D)
        U = full[pre + "upper"] + torch.diag(full[pre + "sign"].double() * torch.exp(full[pre + "log_s"]))
        W = (L @ U)[full[pre + "permutation"]]
        x = torch.randn(3, D)
        self.assertLess((lu(x)[0] - (x @ W.T + full[pre + "bias"])).abs().max().item(), 1e-12)
        # Permutation: z_i = x_{permutation[i]}.
        z = steps[9](x)[0]
        for i, p in enumerate(buffers["transform.9.permutation"].tolist()):
            self.assertTrue(torch.equal(z[:, i], x[:, p]))
        # Coupling masks: features with mask 0 pass through unchanged.
        z = steps[0](x)[0]
        for i, m in enumerate(buffers["transform.0.mask"].tolist()):
            self.assertEqual(torch.equal(z[:, i], x[:, i]), m == 0)

        # A float32 model exports the same integer buffers; the file holds them as I64.
        with tempfile.TemporaryDirectory() as d:
            for dtype in ("f64", "f32"):
                path = os.path.join(d, f"m_{dtype}.safetensors")
                nt.save_safetensors(nt.state_dict_for_nflow(model.to(torch.float32) if dtype == "f32" else model),
                                    path, dtype)
                with open(path, "rb") as f:
                    raw = f.read()
                (n,) = struct.unpack("<Q", raw[:8])
                header = json.loads(raw[8:8 + n])
                for name, values in expected.items():
                    self.assertEqual(header[name]["dtype"], "I64")
                    self.assertEqual(header[name]["shape"], [len(values)])
                back, _ = nt.load_safetensors(path)
                for name, values in expected.items():
                    self.assertEqual(back[name].tolist(), list(values))
                model.to(torch.float64)

    def test_made_buffers_with_context(self):
        # A conditional MADE's first hidden layer starts at degree 0.
        maf = nt.MAF(4, 5, 2, context_dim=2, order="reversed")
        b = nt.buffers_for_nflow(maf)
        self.assertEqual(b["made.order"].tolist(), [3, 2, 1, 0])
        self.assertEqual(b["made.hidden_degrees.0"].tolist(), [0, 0, 1, 2, 3])
        self.assertEqual(b["made.hidden_degrees.1"].tolist(), [0, 0, 1, 2, 3])
        self.assertEqual(set(b), {"made.order", "made.hidden_degrees.0", "made.hidden_degrees.1"})

    def test_bridge_fixtures_hold_the_buffers(self):
        # The committed fixtures (tools/make_bridge_fixture.py): the seeded structures in the
        # model file equal the ones the _io file lists for the C++ test (which checks them against
        # nflow's own construction from the same seeds).
        here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "bridge")
        path = os.path.join(here, "random_structures.safetensors")
        if not os.path.exists(path):
            self.skipTest("tests/data/bridge not present")
        model, meta = nt.load_safetensors(path)
        io, _ = nt.load_safetensors(os.path.join(here, "random_structures_io.safetensors"))
        self.assertEqual(model["transform.0.made.order"].tolist(), io["maf0.order"].tolist())
        for l in range(2):
            for i in (0, 3):
                self.assertEqual(model[f"transform.{i}.made.hidden_degrees.{l}"].tolist(),
                                 io[f"maf{i}.hidden_degrees.{l}"].tolist())
        self.assertEqual(model["transform.1.permutation"].tolist(), io["perm"].tolist())
        self.assertEqual(model["transform.2.permutation"].tolist(), io["lu.perm"].tolist())
        self.assertEqual(model["transform.2.sign"].tolist(), [int(v) for v in io["lu.sign"].tolist()])
        # Every fixture model file holds exactly what its architecture exports.
        for name in ("realnvp_maf", "realnvp_maf_f32", "conditional", "random_structures", "spline",
                     "spline_conditional", "spline_box"):
            with self.subTest(fixture=name):
                tensors, meta = nt.load_safetensors(os.path.join(here, f"{name}.safetensors"))
                arch = nt.from_config(json.loads(meta["nflow_torch.architecture"]))
                self.assertEqual(set(tensors), set(nt.state_dict_for_nflow(arch)))
                for k, v in nt.buffers_for_nflow(arch).items():
                    self.assertEqual(tensors[k].dtype, torch.int64, k)
                    # The architecture rebuilds the same structure; the ActNorms were initialised.
                    want = [1] if k.endswith(".initialized") else v.tolist()
                    self.assertEqual(tensors[k].tolist(), want, k)

    def test_flow_refuses_mixed_contexts(self):
        with self.assertRaises(ValueError):
            nt.Flow(nt.AffineCoupling(4, context_dim=2), nt.AffineCoupling(4))


def splines():
    """One spline per domain and option set the tests run (bins 1 included)."""
    return [nt.RationalQuadraticSpline(),
            nt.RationalQuadraticSpline(1, "unbounded", -2.0, 3.0),
            nt.RationalQuadraticSpline(5, "bounded"),
            nt.RationalQuadraticSpline(3, "bounded", -2.0, 1.5, 0.05, 0.02, 0.1),
            nt.RationalQuadraticSpline(6, "circular"),
            nt.RationalQuadraticSpline(1, "circular", 0.0, 1.0, min_derivative=0.5)]


def spline_inputs(spline, n, gen):
    """Points inside, on the bounds and outside [lower, upper] (tails, other periods)."""
    lo, hi = spline.lower, spline.upper
    span = hi - lo
    inside = lo + span * torch.rand(40, n, generator=gen)
    far = lo - span + 3 * span * torch.rand(20, n, generator=gen)
    edges = torch.tensor([lo, hi, lo - 0.25 * span, hi + 0.5 * span]).repeat(n, 1).T
    return torch.cat([inside, far, edges])


class SplineTest(unittest.TestCase):
    """nt.RationalQuadraticSpline: finite-difference log-dets, round trips, nflow's edges."""

    def test_log_det_against_finite_differences(self):
        gen = torch.Generator().manual_seed(5)
        for spline in splines():
            with self.subTest(spline=spline.options()):
                x = spline_inputs(spline, 3, gen)
                raw = torch.randn(x.shape[0], 3 * spline.params_per_dim, generator=gen)
                for inverse in (False, True):
                    _, ld = spline.elementwise(x, raw, inverse)
                    # (Central differences: O(h^2) error, O(h) across a knot or a bound, where
                    # the second derivative jumps, and O(eps |y| / h) rounding.)
                    h = 1e-7 * (spline.upper - spline.lower)
                    up, _ = spline.elementwise(x + h, raw, inverse)
                    down, _ = spline.elementwise(x - h, raw, inverse)
                    fd = (up - down) / (2 * h)
                    slope = torch.exp(ld)
                    self.assertLess(((fd - slope).abs() / (1e-7 + slope)).max().item(), 1e-4)
                    # The summed log-det is the per-feature one's sum.
                    _, total = (spline.inverse if inverse else spline.forward)(x, raw)
                    self.assertLess((total - ld.sum(-1)).abs().max().item(), 1e-12)

    def test_round_trip(self):
        gen = torch.Generator().manual_seed(6)
        for spline in splines():
            with self.subTest(spline=spline.options()):
                x = spline_inputs(spline, 4, gen)
                raw = 2.0 * torch.randn(x.shape[0], 4 * spline.params_per_dim, generator=gen)
                z, ld = spline.forward(x, raw)
                xr, ild = spline.inverse(z, raw)
                self.assertLess(((xr - x).abs() / x.abs().clamp(min=1)).max().item(), 1e-10)
                self.assertLess((ld + ild).abs().max().item(), 1e-9)
                zr, _ = spline.forward(spline.inverse(x, raw)[0], raw)
                self.assertLess(((zr - x).abs() / x.abs().clamp(min=1)).max().item(), 1e-10)

    def test_zero_parameters_are_the_identity_and_edges_are_exact(self):
        for spline in splines():
            with self.subTest(spline=spline.options()):
                lo, hi = spline.lower, spline.upper
                x = torch.linspace(lo, hi, 17).unsqueeze(1)[:-1]  # [lower, upper)
                zero = torch.zeros(x.shape[0], spline.params_per_dim)
                for inverse in (False, True):
                    z, ld = spline.elementwise(x, zero, inverse)
                    self.assertTrue(torch.equal(z, x))
                    self.assertTrue(torch.equal(ld, torch.zeros_like(ld)))
                # Any parameters map the bounds to themselves (the circle: lower to lower, upper
                # to lower + one period).
                raw = torch.randn(2, spline.params_per_dim, generator=torch.Generator().manual_seed(1))
                ends = torch.tensor([[lo], [hi]])
                for inverse in (False, True):
                    z, ld = spline.elementwise(ends, raw, inverse)
                    self.assertEqual(z[0, 0].item(), lo)
                    self.assertAlmostEqual(z[1, 0].item(), hi, places=14)
                    self.assertTrue(torch.isfinite(ld).all())
                # NaN in, NaN out (value and log-det), for that element only.
                v = torch.tensor([[float("nan"), 0.5 * (lo + hi)]])
                z, ld = spline.elementwise(v, torch.randn(1, 2 * spline.params_per_dim))
                self.assertTrue(torch.isnan(z[0, 0]) and torch.isnan(ld[0, 0]))
                self.assertTrue(torch.isfinite(z[0, 1]) and torch.isfinite(ld[0, 1]))

    def test_tails(self):
        raw = torch.randn(3, 2 * 9, generator=torch.Generator().manual_seed(2))
        x = torch.tensor([[-7.0, 6.0], [-5.5, 9.0], [-100.0, 5.0]])
        z, ld = nt.RationalQuadraticSpline(4).elementwise(x, raw.repeat(1, 11)[:, :2 * 11])
        self.assertTrue(torch.equal(z, x))  # unbounded: the identity outside [-5, 5] and at 5
        self.assertTrue(torch.equal(ld, torch.zeros_like(ld)))
        bounded = nt.RationalQuadraticSpline(4, "bounded")
        raw = torch.randn(3, 2 * bounded.params_per_dim, generator=torch.Generator().manual_seed(3))
        x = torch.tensor([[-1.0, 2.0], [-0.5, 1.5], [-3.0, 4.0]])
        z, ld = bounded.elementwise(x, raw)
        _, d, delta = bounded.knots(raw, 2)
        self.assertLess((z[:, 0] - delta[:, 0, 0] * x[:, 0]).abs().max().item(), 1e-14)
        self.assertLess((z[:, 1] - (1 + delta[:, -1, 1] * (x[:, 1] - 1))).abs().max().item(), 1e-14)
        self.assertLess((ld[:, 0] - torch.log(delta[:, 0, 0])).abs().max().item(), 1e-14)
        circle = nt.RationalQuadraticSpline(4, "circular")
        raw = torch.randn(1, 2 * circle.params_per_dim, generator=torch.Generator().manual_seed(4)).repeat(3, 1)
        x = torch.tensor([[0.3, -2.0], [0.3 + 2 * math.pi, -2.0 - 4 * math.pi], [0.3 - 6 * math.pi, -2.0 + 2 * math.pi]])
        z, ld = circle.elementwise(x, raw)
        shift = x - x[:1]
        self.assertLess((z - z[:1] - shift).abs().max().item(), 1e-13)  # commutes with periods
        self.assertLess((ld - ld[:1]).abs().max().item(), 1e-12)

    def test_knots_and_parameter_layout(self):
        # Blocked: raw parameter p of feature i is column p·n + i; zero raw parameters give equal
        # bins and unit derivatives; the circle ties its first and last derivative.
        for spline in splines():
            K, n = spline.bins, 3
            X, Y, d = spline.knots(torch.zeros(1, n * spline.params_per_dim), n)
            even = torch.linspace(spline.lower, spline.upper, K + 1)
            self.assertLess((X[0, :, 0] - even).abs().max().item(), 1e-13)
            self.assertTrue(torch.equal(d, torch.ones_like(d)))
        spline = nt.RationalQuadraticSpline(3, "circular")
        raw = torch.zeros(1, 2 * spline.params_per_dim)
        raw[0, (2 * 3) * 2 + 1] = 1.0  # derivative parameter 0 of feature 1
        X, Y, d = spline.knots(raw, 2)
        self.assertGreater(d[0, 0, 1].item(), 1.0)
        self.assertEqual(d[0, 0, 1].item(), d[0, 3, 1].item())
        self.assertEqual(d[0, :, 0].tolist(), [1.0] * 4)
        self.assertEqual(spline.params_per_dim, 9)
        self.assertEqual(nt.RationalQuadraticSpline(3).params_per_dim, 8)
        self.assertEqual(nt.RationalQuadraticSpline(3, "bounded").params_per_dim, 10)

    def test_matches_the_benchmark_reference(self):
        # benchmarks/torch_nsf.py writes nflow's unbounded 8-bin spline independently (feature-
        # major parameters, torch's softplus and cumsum).
        here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")
        sys.path.insert(0, here)
        try:
            import torch_nsf
        finally:
            sys.path.remove(here)
        spline = nt.RationalQuadraticSpline()
        gen = torch.Generator().manual_seed(7)
        n, N, P = 3, 64, spline.params_per_dim
        raw = 1.5 * torch.randn(N, P * n, generator=gen)
        x = 4.0 * torch.randn(N, n, generator=gen)
        feature_major = raw.view(N, P, n).transpose(1, 2).reshape(N, P * n)
        z, ld = spline.forward(x, raw)
        z_ref, ld_ref = torch_nsf.rq_forward(x, feature_major)
        self.assertLess((z - z_ref).abs().max().item(), 1e-12)
        self.assertLess((ld - ld_ref).abs().max().item(), 1e-12)
        x_ref, ild_ref = torch_nsf.rq_inverse(z, feature_major, with_log_det=True)
        xr, ild = spline.inverse(z, raw)
        self.assertLess((xr - x_ref).abs().max().item(), 1e-10)
        self.assertLess((ild - ild_ref).abs().max().item(), 1e-9)

    def test_gradients_through_the_parameters(self):
        spline = nt.RationalQuadraticSpline(3, "bounded", -1.0, 2.0)
        gen = torch.Generator().manual_seed(8)
        x = spline_inputs(spline, 2, gen)[::7]
        raw = torch.randn(x.shape[0], 2 * spline.params_per_dim, generator=gen, requires_grad=True)
        for inverse in (False, True):
            self.assertTrue(torch.autograd.gradcheck(lambda r: spline.elementwise(x, r, inverse), (raw,)))

    def test_invalid_options(self):
        for kw in ({"domain": "torus"}, {"bins": 0}, {"lower": 1.0, "upper": 1.0},
                   {"bins": 4, "min_bin_width": 0.25}, {"min_derivative": 1.0}, {"min_bin_height": 0.0}):
            with self.subTest(kw=kw), self.assertRaises(ValueError):
                nt.RationalQuadraticSpline(**kw)

    def test_uniform_box(self):
        box = nt.UniformBox(2, [-1.0, 0.0], [1.0, 4.0])
        z = torch.tensor([[0.0, 1.0], [-1.0, 4.0], [1.5, 1.0], [0.0, float("nan")]])
        lp = box.log_prob(z)
        self.assertAlmostEqual(lp[0].item(), -math.log(8.0), places=14)
        self.assertEqual(lp[1].item(), lp[0].item())  # closed box
        self.assertEqual(lp[2].item(), -math.inf)
        self.assertTrue(math.isnan(lp[3].item()))
        s = box.sample(1000, torch.Generator().manual_seed(1))
        self.assertTrue(((s >= box.lower) & (s < box.upper)).all())


if __name__ == "__main__":
    unittest.main()
