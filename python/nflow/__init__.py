"""nflow from Python: trained normalizing flows through nflow's C ABI.

    import numpy as np, nflow
    model = nflow.Model.open("flow.safetensors")
    log_p = model.log_prob(x)                 # x: (n, dim) or (dim,)
    samples = model.sample(1000, seed=7)

Arrays: a batch is (n, dim), one point per row; one point may be given as (dim,). NumPy arrays go
to the C library without a copy when their strides allow it (C order, Fortran order, and views
whose strides are multiples of the item size); otherwise one copy is made. Outputs are new arrays
in the input's order.

Dtypes: a model computes in float32 or float64 (``Model.dtype``). An input of another dtype is
converted to the model's if NumPy allows the cast under ``casting="same_kind"`` (float64 data for
a float32 model is rounded, integers are converted); other dtypes (complex, object, str) raise
ScalarTypeError. Outputs have the model's dtype.

Errors: every failure raises a subclass of NflowError carrying the C library's sentence and, in
``status``, the C status's name: FormatError, VersionError (a subclass of FormatError), InputError
(also a ValueError), ScalarTypeError (also a TypeError), UnsupportedError (also a
NotImplementedError), FileError (also an OSError).

Threads: every call releases the GIL. All calls but ``fit`` may run on one Model from many
threads at once; ``fit`` waits for them and runs alone (a lock in the Model).
See docs/embedding_python.md.
"""

import json as _json
import operator as _operator
import os as _os

import numpy as _np

from . import _nflow
from ._nflow import (
    FileError,
    FormatError,
    InputError,
    NflowError,
    ScalarTypeError,
    UnsupportedError,
    VersionError,
)

__all__ = [
    "Model",
    "NflowError",
    "FormatError",
    "VersionError",
    "InputError",
    "ScalarTypeError",
    "UnsupportedError",
    "FileError",
    "schema_version",
    "ABI_VERSION",
    "__version__",
]

__version__ = _nflow.version()
ABI_VERSION = _nflow.ABI_VERSION

_FILE, _FLOAT32, _FLOAT64 = 0, 1, 2  # nflow_scalar


def schema_version():
    """The newest model-file schema version the library reads (and the one it writes)."""
    return _nflow.schema_version()


def _scalar_code(dtype, allow_file):
    if dtype is None and allow_file:
        return _FILE
    try:
        d = _np.dtype(dtype)
    except TypeError:
        d = None
    if d == _np.float32:
        return _FLOAT32
    if d == _np.float64:
        return _FLOAT64
    raise ScalarTypeError(
        "nflow: dtype must be float32 or float64"
        + (" (or None: the file's own)" if allow_file else "")
        + ", got " + repr(dtype)
    )


def _json_value(value):
    if isinstance(value, _np.generic):  # NumPy scalars, e.g. np.int64(8)
        return value.item()
    raise TypeError("nflow: an option value must be a number, string or bool, got %r" % (value,))


def _options_json(options):
    return _json.dumps(options, default=_json_value) if options else None


class Model:
    """A normalizing flow p(x | context) behind one C handle.

    Make one with Model.open(path), Model.from_bytes(data) or Model.preset(family, dim, ...).
    """

    def __init__(self, handle):
        if not isinstance(handle, _nflow.Handle):
            raise TypeError("use Model.open, Model.from_bytes or Model.preset to make a Model")
        self._handle = handle
        self._dtype = _np.dtype(_np.float32 if handle.is_float32 else _np.float64)

    # ---- making models -----------------------------------------------------------------------
    @classmethod
    def open(cls, path, dtype=None):
        """Opens a self-describing model file; dtype None keeps the file's scalar type."""
        return cls(_nflow.Handle.open(_os.fsencode(path), _scalar_code(dtype, True)))

    @classmethod
    def from_bytes(cls, data, dtype=None):
        """The model in `data` (bytes, bytearray, memoryview: a model file's contents)."""
        view = memoryview(data)
        if not view.c_contiguous:
            view = memoryview(view.tobytes())
        return cls(_nflow.Handle.open_memory(view.cast("B"), _scalar_code(dtype, True)))

    @classmethod
    def preset(cls, family, dim, dtype=_np.float64, **options):
        """A fresh (untrained) flow of a preset family: "real_nvp", "nice", "glow", "maf",
        "iaf", "coupling_nsf", "autoregressive_nsf" or "cnf"; options as docs/presets.md:
        transforms, hidden_features, hidden_layers, context, seed, and for splines bins and bound.
        """
        dim = _operator.index(dim)
        if dim < 0:
            raise InputError("nflow: dim must not be negative, got %d" % dim)
        return cls(
            _nflow.Handle.preset(
                str(family), dim, _options_json(options), _scalar_code(dtype, False)
            )
        )

    def save(self, path):
        """Writes the model (architecture and parameters) to a self-describing file."""
        self._handle.save(_os.fsencode(path))

    # ---- properties --------------------------------------------------------------------------
    @property
    def dim(self):
        """Features per point."""
        return self._handle.dim

    @property
    def context_dim(self):
        """Context values per point (0: unconditional)."""
        return self._handle.context_dim

    @property
    def dtype(self):
        """numpy.float32 or numpy.float64: the model's scalar type."""
        return self._dtype

    @property
    def schema_version(self):
        """The schema version of the file the model came from (the current one for a preset)."""
        return self._handle.schema_version

    @property
    def description(self):
        """The architecture as JSON text (docs/model_files.md)."""
        return self._handle.description

    @property
    def parameter_count(self):
        """Trainable scalars."""
        return self._handle.parameter_count

    def __repr__(self):
        return "<nflow.Model dim=%d context_dim=%d dtype=%s parameters=%d>" % (
            self.dim,
            self.context_dim,
            self._dtype.name,
            self.parameter_count,
        )

    # ---- evaluation --------------------------------------------------------------------------
    def log_prob(self, x, context=None):
        """log p(x | context): (n,) for x of shape (n, dim); a scalar for x of shape (dim,)."""
        x, one = self._points(x, "x")
        out = self._handle.log_prob(x, self._context(context, x.shape[0], one))
        return out[0] if one else out

    def forward(self, x, context=None):
        """z = f(x), data to latent."""
        return self._transform(x, context, False, False)

    def forward_and_log_det(self, x, context=None):
        """(z, log|det df/dx|)."""
        return self._transform(x, context, False, True)

    def inverse(self, z, context=None):
        """x = f^-1(z), latent to data."""
        return self._transform(z, context, True, False)

    def inverse_and_log_det(self, z, context=None):
        """(x, log|det df^-1/dz|)."""
        return self._transform(z, context, True, True)

    def sample(self, n, seed, context=None):
        """n samples, (n, dim), from nflow's generator seeded by `seed` (same seed, same samples).
        A context of shape (context_dim,) is used for every sample, (n, context_dim) per sample.
        """
        return self._sample(n, seed, context, False)

    def sample_and_log_prob(self, n, seed, context=None):
        """(samples, their log p)."""
        return self._sample(n, seed, context, True)

    def sample_from_uniforms(self, u, context=None):
        """x from uniforms u in (0, 1)^dim: the base's quantile of u, then the inverse flow."""
        return self._from_uniforms(u, context, False)

    def sample_from_uniforms_and_log_prob(self, u, context=None):
        """(x, log p(x)) from uniforms u."""
        return self._from_uniforms(u, context, True)

    def score(self, x, context=None):
        """grad_x log p(x | context), the shape of x."""
        x, one = self._points(x, "x")
        out = self._handle.gradient(x, self._context(context, x.shape[0], one), False)
        return out[0] if one else out

    def context_gradient(self, x, context):
        """grad_context log p(x | context): (n, context_dim), or (context_dim,) for one point."""
        x, one = self._points(x, "x")
        out = self._handle.gradient(x, self._context(context, x.shape[0], one), True)
        return out[0] if one else out

    # ---- training ----------------------------------------------------------------------------
    def fit(self, x, context=None, **options):
        """Fits the model to the points x (n, dim) by maximum likelihood; options: epochs,
        batch_size, learning_rate, seed. Returns the mean negative log-likelihood of x after
        training. Runs alone: other calls on this Model wait for it.
        """
        x, one = self._points(x, "x")
        return self._handle.fit(
            x, self._context(context, x.shape[0], one), _options_json(options)
        )

    # ---- helpers -----------------------------------------------------------------------------
    def _array(self, a, name):
        a = _np.asarray(a)
        if a.dtype != self._dtype:
            if not _np.can_cast(a.dtype, self._dtype, casting="same_kind"):
                raise ScalarTypeError(
                    "nflow: %s has dtype %s, which does not convert to the model's %s "
                    '(casting="same_kind")' % (name, a.dtype, self._dtype)
                )
            a = a.astype(self._dtype, order="K")
        return a

    def _points(self, x, name):
        x = self._array(x, name)
        if x.ndim == 1:
            return x.reshape(1, -1), True
        if x.ndim != 2:
            raise InputError(
                "nflow: %s must be one point (dim,) or a batch (n, dim), got shape %s"
                % (name, x.shape)
            )
        return x, False

    def _context(self, context, n, one):
        if context is None:
            return None
        c = self._array(context, "context")
        if c.ndim == 2 and one and c.shape[0] != 1:
            raise InputError(
                "nflow: one point takes one context (context_dim,), got shape %s" % (c.shape,)
            )
        if c.ndim == 1:
            c = c.reshape(1, -1)
        if c.ndim != 2:
            raise InputError(
                "nflow: context must be (context_dim,) or (n, context_dim), got shape %s"
                % (c.shape,)
            )
        if c.shape[0] == 1 and n != 1:
            return _np.broadcast_to(c, (n, c.shape[1]))  # a view: one context for every point
        if c.shape[0] != n:
            raise InputError(
                "nflow: context has %d points but there are %d" % (c.shape[0], n)
            )
        return c

    def _transform(self, x, context, inverse, want_log_det):
        x, one = self._points(x, "z" if inverse else "x")
        out, log_det = self._handle.transform(
            x, self._context(context, x.shape[0], one), inverse, want_log_det
        )
        if one:
            out = out[0]
            log_det = None if log_det is None else log_det[0]
        return (out, log_det) if want_log_det else out

    def _sample(self, n, seed, context, want_log_prob):
        n = _operator.index(n)
        if n < 0:
            raise InputError("nflow: the number of samples must not be negative, got %d" % n)
        seed = _operator.index(seed)
        if not 0 <= seed < 2**64:
            raise InputError("nflow: seed must be in [0, 2**64), got %d" % seed)
        x, log_prob = self._handle.sample(n, seed, self._context(context, n, False), want_log_prob)
        return (x, log_prob) if want_log_prob else x

    def _from_uniforms(self, u, context, want_log_prob):
        u, one = self._points(u, "u")
        x, log_prob = self._handle.sample_from_uniforms(
            u, self._context(context, u.shape[0], one), want_log_prob
        )
        if one:
            x = x[0]
            log_prob = None if log_prob is None else log_prob[0]
        return (x, log_prob) if want_log_prob else x
