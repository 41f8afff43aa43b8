"""Tests of the Python module nflow (python/nflow) over the C ABI.

Values are checked against independent truth: the base density plus the forward log-det, round
trips, central finite differences, the normal quantile from Python's statistics module, a file
saved and opened again, serial against threaded runs. Run with
    PYTHONPATH=<build>/python python3 -m unittest discover -s python/tests
(ctest does so: label "bindings") or with pytest.
"""

import concurrent.futures
import json
import math
import os
import statistics
import struct
import tempfile
import unittest

import numpy as np

import nflow

DIM = 3
CONTEXT_DIM = 2
LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z):
    return -0.5 * np.sum(z * z, axis=-1) - 0.5 * z.shape[-1] * LOG_2PI


def data_set(n, seed):
    """Correlated, shifted Gaussian points (n, DIM) and their contexts (n, CONTEXT_DIM)."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(-1.0, 1.0, size=(n, CONTEXT_DIM))
    e = rng.normal(size=(n, DIM))
    x = np.empty((n, DIM))
    x[:, 0] = 1.0 + 0.5 * e[:, 0] + c[:, 0]
    x[:, 1] = -0.5 + 0.8 * e[:, 0] + 0.3 * e[:, 1] - c[:, 1]
    x[:, 2] = 0.2 * e[:, 2] + 0.5 * c[:, 0] * c[:, 1]
    return x, c


def with_schema(model_bytes, schema):
    """A copy of a safetensors model file whose metadata says "nflow.schema" = schema."""
    (size,) = struct.unpack("<Q", model_bytes[:8])
    header = json.loads(model_bytes[8 : 8 + size])
    header["__metadata__"]["nflow.schema"] = str(schema)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + model_bytes[8 + size :]


class ModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.x, cls.c = data_set(256, seed=1)
        # Trained briefly, so that no layer is the identity any more.
        cls.plain = nflow.Model.preset("real_nvp", DIM, transforms=2, hidden_features=16, seed=3)
        cls.plain.fit(cls.x, epochs=3, batch_size=64, learning_rate=1e-2, seed=5)
        cls.conditional = nflow.Model.preset(
            "maf", DIM, transforms=2, hidden_features=16, context=CONTEXT_DIM, seed=4
        )
        cls.conditional.fit(cls.x, cls.c, epochs=3, batch_size=64, learning_rate=1e-2, seed=6)
        cls.plain_path = os.path.join(cls.tmp.name, "plain.safetensors")
        cls.plain.save(cls.plain_path)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def models(self):
        """(model, context or None) pairs."""
        return [(self.plain, None), (self.conditional, self.c[:16])]

    # ---- properties ----------------------------------------------------------------------
    def test_properties(self):
        self.assertEqual(self.plain.dim, DIM)
        self.assertEqual(self.plain.context_dim, 0)
        self.assertEqual(self.conditional.context_dim, CONTEXT_DIM)
        self.assertEqual(self.plain.dtype, np.float64)
        self.assertEqual(self.plain.schema_version, nflow.schema_version())
        self.assertGreater(self.plain.parameter_count, 0)
        json.loads(self.plain.description)  # valid JSON
        self.assertIn("dim=3", repr(self.plain))
        self.assertRegex(nflow.__version__, r"^\d+\.\d+\.\d+")

    # ---- values against independent truth -----------------------------------------------
    def test_log_prob_is_base_log_prob_plus_forward_log_det(self):
        for model, c in self.models():
            x = self.x[:16]
            z, log_det = model.forward_and_log_det(x, c)
            expected = standard_normal_log_prob(z) + log_det
            np.testing.assert_allclose(model.log_prob(x, c), expected, rtol=1e-12, atol=1e-12)
            np.testing.assert_array_equal(model.forward(x, c), z)

    def test_inverse_undoes_forward(self):
        for model, c in self.models():
            x = self.x[:16]
            z, log_det = model.forward_and_log_det(x, c)
            self.assertGreater(np.max(np.abs(z - x)), 1e-3)  # a trained flow moves the points
            back, inverse_log_det = model.inverse_and_log_det(z, c)
            np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(inverse_log_det, -log_det, rtol=1e-9, atol=1e-9)
            np.testing.assert_array_equal(model.inverse(z, c), back)

    def test_score_matches_finite_differences(self):
        h = 1e-5
        for model, c in self.models():
            x = self.x[:16]
            score = model.score(x, c)
            self.assertEqual(score.shape, x.shape)
            for i in range(DIM):
                step = np.zeros(DIM)
                step[i] = h
                numeric = (model.log_prob(x + step, c) - model.log_prob(x - step, c)) / (2 * h)
                np.testing.assert_allclose(score[:, i], numeric, rtol=1e-5, atol=1e-6)

    def test_context_gradient_matches_finite_differences(self):
        h = 1e-5
        model, x, c = self.conditional, self.x[:8], self.c[:8]
        gradient = model.context_gradient(x, c)
        self.assertEqual(gradient.shape, (8, CONTEXT_DIM))
        self.assertGreater(np.max(np.abs(gradient)), 1e-3)  # the model depends on its context
        self.assertEqual(model.context_gradient(x[3], c[3]).shape, (CONTEXT_DIM,))
        # one point takes the one-column path: the same numbers up to rounding
        np.testing.assert_allclose(
            model.context_gradient(x[3], c[3]), gradient[3], rtol=1e-12, atol=1e-14
        )
        for k in range(CONTEXT_DIM):
            step = np.zeros(CONTEXT_DIM)
            step[k] = h
            numeric = (model.log_prob(x, c + step) - model.log_prob(x, c - step)) / (2 * h)
            np.testing.assert_allclose(gradient[:, k], numeric, rtol=1e-5, atol=1e-6)
        self.assert_error(
            nflow.InputError, ValueError, self.plain.context_gradient, self.x[:2], self.c[:2]
        )

    def test_samples_are_reproducible_and_carry_their_log_prob(self):
        for model, c in [(self.plain, None), (self.conditional, self.c[0])]:
            a = model.sample(64, 11, c)
            np.testing.assert_array_equal(a, model.sample(64, 11, c))
            self.assertFalse(np.array_equal(a, model.sample(64, 12, c)))
            self.assertEqual(a.shape, (64, DIM))
            x, log_prob = model.sample_and_log_prob(64, 11, c)
            np.testing.assert_array_equal(x, a)
            np.testing.assert_allclose(log_prob, model.log_prob(x, c), rtol=1e-9, atol=1e-9)

    def test_sample_from_uniforms_is_inverse_of_normal_quantiles(self):
        u = np.random.default_rng(2).uniform(0.01, 0.99, size=(16, DIM))
        quantile = np.vectorize(statistics.NormalDist().inv_cdf)
        for model, c in self.models():
            x, log_prob = model.sample_from_uniforms_and_log_prob(u, c)
            np.testing.assert_allclose(x, model.inverse(quantile(u), c), rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(log_prob, model.log_prob(x, c), rtol=1e-9, atol=1e-9)
            np.testing.assert_array_equal(model.sample_from_uniforms(u, c), x)

    def test_saved_file_opens_to_the_same_model(self):
        again = nflow.Model.open(self.plain_path)
        with open(self.plain_path, "rb") as f:
            from_bytes = nflow.Model.from_bytes(f.read())
        for model in (again, from_bytes):
            self.assertEqual(model.dim, DIM)
            self.assertEqual(model.parameter_count, self.plain.parameter_count)
            self.assertEqual(model.description, self.plain.description)
            np.testing.assert_array_equal(model.log_prob(self.x), self.plain.log_prob(self.x))
        path = os.path.join(self.tmp.name, "conditional.safetensors")
        self.conditional.save(path)
        again = nflow.Model.open(path)
        np.testing.assert_array_equal(
            again.log_prob(self.x, self.c), self.conditional.log_prob(self.x, self.c)
        )

    def test_continuous_flow_saves_and_opens_without_its_type(self):
        # A cnf preset (RK4, exact trace) is described in its file: it reopens to the same model.
        model = nflow.Model.preset("cnf", DIM, hidden_features=8, seed=4)
        self.assertIn('"continuous"', model.description)
        path = os.path.join(self.tmp.name, "cnf.safetensors")
        model.save(path)
        again = nflow.Model.open(path)
        self.assertEqual(again.description, model.description)
        np.testing.assert_array_equal(again.log_prob(self.x), model.log_prob(self.x))
        z, log_det = model.forward_and_log_det(self.x)
        x, inverse_log_det = model.inverse_and_log_det(z)
        np.testing.assert_allclose(x, self.x, atol=1e-6)  # RK4 backwards: to the solver's error
        np.testing.assert_allclose(inverse_log_det, -log_det, atol=1e-6)

    # ---- shapes, layouts and copies --------------------------------------------------------
    def test_one_point(self):
        for model, c in [(self.plain, None), (self.conditional, self.c[3])]:
            x = self.x[3]
            batch_c = None if c is None else c[np.newaxis]
            self.assertEqual(model.log_prob(x, c), model.log_prob(x[np.newaxis], batch_c)[0])
            z, log_det = model.forward_and_log_det(x, c)
            self.assertEqual(z.shape, (DIM,))
            self.assertTrue(np.isscalar(log_det) or np.ndim(log_det) == 0)
            np.testing.assert_array_equal(model.score(x, c), model.score(x[np.newaxis], batch_c)[0])

    def test_layouts_and_views_need_no_copy(self):
        x = self.x[:32]
        expected = self.plain.log_prob(x)
        expected_z = self.plain.forward(x)
        wide = np.zeros((32, DIM + 4))
        wide[:, 2 : 2 + DIM] = x
        every_other = np.zeros((64, DIM))
        every_other[::2] = x
        fortran_wide = np.asfortranarray(np.zeros((40, DIM)))
        fortran_wide[:32] = x
        views = {
            "C order": np.ascontiguousarray(x),
            "Fortran order": np.asfortranarray(x),
            "columns of a wider array": wide[:, 2 : 2 + DIM],
            "every other row": every_other[::2],
            "rows of a Fortran array": fortran_wide[:32],
        }
        for name, view in views.items():
            with self.subTest(name):
                before = nflow._nflow.input_copies()
                np.testing.assert_array_equal(self.plain.log_prob(view), expected)
                z = self.plain.forward(view)
                self.assertEqual(nflow._nflow.input_copies(), before, name + " was copied")
                np.testing.assert_array_equal(z, expected_z)
        # Output in the input's order.
        self.assertTrue(self.plain.forward(np.asfortranarray(x)).flags.f_contiguous)
        self.assertTrue(self.plain.forward(x).flags.c_contiguous)
        # No layout describes reversed rows: one copy, the same values.
        before = nflow._nflow.input_copies()
        np.testing.assert_array_equal(self.plain.log_prob(x[::-1]), expected[::-1])
        self.assertEqual(nflow._nflow.input_copies(), before + 1)

    def test_one_context_for_every_point(self):
        model, x = self.conditional, self.x[:16]
        repeated = np.repeat(self.c[:1], 16, axis=0)
        before = nflow._nflow.input_copies()
        np.testing.assert_array_equal(model.log_prob(x, self.c[0]), model.log_prob(x, repeated))
        np.testing.assert_array_equal(
            model.log_prob(np.asfortranarray(x), self.c[0]), model.log_prob(x, repeated)
        )
        self.assertEqual(nflow._nflow.input_copies(), before)

    def test_empty_batches(self):
        self.assertEqual(self.plain.log_prob(np.zeros((0, DIM))).shape, (0,))
        self.assertEqual(self.plain.sample(0, 1).shape, (0, DIM))
        self.assertEqual(self.plain.forward(np.zeros((0, DIM))).shape, (0, DIM))

    # ---- dtypes ----------------------------------------------------------------------------
    def test_float32_model(self):
        model = nflow.Model.open(self.plain_path, dtype=np.float32)
        self.assertEqual(model.dtype, np.float32)
        x32 = self.x[:16].astype(np.float32)
        log_prob = model.log_prob(x32)
        self.assertEqual(log_prob.dtype, np.float32)
        np.testing.assert_allclose(log_prob, self.plain.log_prob(self.x[:16]), rtol=1e-4, atol=1e-4)
        # float64 input: converted (same_kind), rounded like the float32 input.
        np.testing.assert_array_equal(model.log_prob(self.x[:16]), log_prob)
        self.assertEqual(model.sample(4, 1).dtype, np.float32)
        # integers convert too
        self.assertEqual(model.log_prob(np.zeros((2, DIM), dtype=np.int64)).dtype, np.float32)

    # ---- threads ---------------------------------------------------------------------------
    def test_threads_give_the_serial_results(self):
        chunks = [self.x[i : i + 32] for i in range(0, 256, 32)]
        serial = [self.conditional.log_prob(x, self.c[0]) for x in chunks]
        serial_samples = [self.plain.sample(100, seed) for seed in range(8)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            for _ in range(5):
                threaded = list(pool.map(lambda x: self.conditional.log_prob(x, self.c[0]), chunks))
                samples = list(pool.map(lambda s: self.plain.sample(100, s), range(8)))
                for a, b in zip(serial + serial_samples, threaded + samples):
                    np.testing.assert_array_equal(a, b)

    def test_fit_runs_alone(self):
        # Calls overlapping a fit see the parameters before it or after it, never a mixture.
        model = nflow.Model.from_bytes(open(self.plain_path, "rb").read())
        x = self.x[:8]
        before = model.log_prob(x)
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            fit = pool.submit(model.fit, self.x, epochs=2, batch_size=32, seed=9)
            seen = [pool.submit(model.log_prob, x) for _ in range(200)]
            fit.result()
            after = model.log_prob(x)
            self.assertFalse(np.array_equal(before, after))
            for future in seen:
                values = future.result()
                self.assertTrue(
                    np.array_equal(values, before) or np.array_equal(values, after),
                    "a call during fit saw a partly updated model",
                )

    # ---- training --------------------------------------------------------------------------
    def test_fit_lowers_the_negative_log_likelihood(self):
        model = nflow.Model.preset("real_nvp", DIM, transforms=2, hidden_features=16, seed=8)
        before = -np.mean(model.log_prob(self.x))
        final = model.fit(self.x, epochs=5, batch_size=64, learning_rate=1e-2, seed=1)
        self.assertLess(final, before - 0.1)
        self.assertAlmostEqual(final, -np.mean(model.log_prob(self.x)), places=9)

    def test_fit_float32_data_converts(self):
        model = nflow.Model.preset("maf", DIM, dtype=np.float32, transforms=1, seed=2)
        final = model.fit(self.x, epochs=np.int64(1), batch_size=64)  # float64 data: converted
        self.assertTrue(math.isfinite(final))

    # ---- errors ----------------------------------------------------------------------------
    def assert_error(self, error_class, builtin, call, *args, **kwargs):
        with self.assertRaises(error_class) as caught:
            call(*args, **kwargs)
        self.assertIsInstance(caught.exception, nflow.NflowError)
        if builtin is not None:
            self.assertIsInstance(caught.exception, builtin)
        self.assertGreater(len(str(caught.exception)), 10)  # a sentence, not just a code
        return caught.exception

    def test_format_errors(self):
        error = self.assert_error(
            nflow.FormatError, None, nflow.Model.from_bytes, b"this is not a model file"
        )
        self.assertEqual(error.status, "NFLOW_ERROR_FORMAT")
        with open(self.plain_path, "rb") as f:
            data = f.read()
        self.assert_error(nflow.FormatError, None, nflow.Model.from_bytes, data[: len(data) // 2])
        path = os.path.join(self.tmp.name, "garbage.safetensors")
        with open(path, "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
        self.assert_error(nflow.FormatError, None, nflow.Model.open, path)

    def test_version_error(self):
        with open(self.plain_path, "rb") as f:
            data = f.read()
        newer = with_schema(data, nflow.schema_version() + 1)
        error = self.assert_error(nflow.VersionError, None, nflow.Model.from_bytes, newer)
        self.assertIsInstance(error, nflow.FormatError)
        self.assertEqual(error.status, "NFLOW_ERROR_VERSION")
        # The same schema opens (the rewriting itself is sound).
        nflow.Model.from_bytes(with_schema(data, nflow.schema_version()))

    def test_input_errors_are_value_errors(self):
        bad = self.x[:4].copy()
        bad[2, 1] = np.nan
        error = self.assert_error(nflow.InputError, ValueError, self.plain.log_prob, bad)
        self.assertEqual(error.status, "NFLOW_ERROR_INPUT")
        self.assert_error(nflow.InputError, ValueError, self.plain.log_prob, np.zeros((4, DIM + 1)))
        self.assert_error(nflow.InputError, ValueError, self.plain.log_prob, np.zeros((2, 2, DIM)))
        self.assert_error(
            nflow.InputError, ValueError, self.plain.sample_from_uniforms, np.full((2, DIM), 1.5)
        )
        self.assert_error(nflow.InputError, ValueError, self.plain.sample, -1, 0)
        # contexts: missing, unexpected, wrong size, wrong count
        self.assert_error(nflow.InputError, ValueError, self.conditional.log_prob, self.x[:4])
        self.assert_error(nflow.InputError, ValueError, self.plain.log_prob, self.x[:4], self.c[:4])
        self.assert_error(
            nflow.InputError, ValueError, self.conditional.log_prob, self.x[:4], np.zeros((4, 3))
        )
        self.assert_error(
            nflow.InputError, ValueError, self.conditional.log_prob, self.x[:4], self.c[:3]
        )
        # presets and options
        self.assert_error(nflow.InputError, ValueError, nflow.Model.preset, "no_such_flow", 2)
        self.assert_error(nflow.InputError, ValueError, nflow.Model.preset, "maf", 2, bogus=1)
        model = nflow.Model.preset("maf", DIM, transforms=1)
        self.assert_error(nflow.InputError, ValueError, model.fit, self.x, bogus=3)

    def test_scalar_type_errors_are_type_errors(self):
        self.assert_error(
            nflow.ScalarTypeError, TypeError, self.plain.log_prob, np.zeros((2, DIM), complex)
        )
        self.assert_error(
            nflow.ScalarTypeError, TypeError, self.plain.log_prob, np.array([["a", "b", "c"]])
        )
        self.assert_error(
            nflow.ScalarTypeError, TypeError, nflow.Model.open, self.plain_path, dtype=np.int32
        )

    def test_unsupported_is_not_implemented(self):
        iaf = nflow.Model.preset("iaf", DIM, transforms=1, seed=1)
        error = self.assert_error(
            nflow.UnsupportedError, NotImplementedError, iaf.score, self.x[:2]
        )
        self.assertEqual(error.status, "NFLOW_ERROR_UNSUPPORTED")

    def test_file_errors_are_os_errors(self):
        missing = os.path.join(self.tmp.name, "missing.safetensors")
        self.assert_error(nflow.FileError, OSError, nflow.Model.open, missing)
        no_dir = os.path.join(self.tmp.name, "no", "such", "dir", "m.safetensors")
        self.assert_error(nflow.FileError, OSError, self.plain.save, no_dir)


if __name__ == "__main__":
    unittest.main()
