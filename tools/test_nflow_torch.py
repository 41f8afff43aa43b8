#!/usr/bin/env python3
"""Self-tests of tools/nflow_torch.py (PyTorch side only; the C++ parity is
tests/interop/bridge_test.cpp). Run: python3 tools/test_nflow_torch.py  (unittest, no pytest)."""

import json
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
        for ctx in (0, 2):
            for spec in ("natural", "reversed", [2, 0, 3, 1], "random"):
                maf = perturb(nt.MAF(4, 6, 2, context_dim=ctx, order=spec, hidden_degrees="random", seed=1))
                c = torch.randn(1, 2) if ctx else None
                jac = torch.autograd.functional.jacobian(lambda v: maf.made(v.unsqueeze(0), c)[0], torch.randn(4))
                deg = maf.made.input_degrees
                for r in range(8):
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
        self.assertIn("step<3>().set_initialized(true)", snippet)

    def test_flow_refuses_mixed_contexts(self):
        with self.assertRaises(ValueError):
            nt.Flow(nt.AffineCoupling(4, context_dim=2), nt.AffineCoupling(4))


if __name__ == "__main__":
    unittest.main()
