"""Export a trained :class:`fusedmlp.MLP` as dependency-free C99 inference code.

``export_c(model, directory, name=...)`` writes ``<name>.h`` and ``<name>.c``: the weights as
``static const`` arrays of hexadecimal float literals (exact round trip) and one function per
entry point, C99 plus libm, no allocation (stack scratch of two rows of the widest layer).

Entry points (``T`` is ``float`` or ``double``, the model's dtype), each returning 0 on
success, ``<NAME>_BAD_ARGUMENT`` (1) for a NULL pointer with ``rows > 0``,
``<NAME>_BAD_INPUT`` (2) when ``x`` holds NaN or inf (as ``predict_proba`` refuses it) and
``<NAME>_BAD_OUTPUT`` (3) for a non-finite output (``predict_proba``'s ``FloatingPointError``):

- classifiers (``output="softmax"`` or ``"sigmoid"``):
  ``int <name>_predict_proba(const T *x, size_t rows, T *out)`` (``out``: ``rows x
  <NAME>_N_OUTPUTS``, as ``MLP.predict_proba``) and
  ``int <name>_predict(const T *x, size_t rows, int32_t *labels)`` (softmax: the argmax, ties
  to the first, one per row; sigmoid: 0/1 indicators, ``rows x <NAME>_N_OUTPUTS``);
- regressors (``"identity"``, ``"exp"``): ``int <name>_predict(const T *x, size_t rows, T *out)``.

Dropout is not part of inference and is ignored. ``compute_dtype="bfloat16"`` models are
refused (export a float32 copy with ``model.compute_dtype = None`` first).
"""

from __future__ import annotations

import os
import re

import numpy as np

from . import _codes
from .io import check_finite_model

__all__ = ["export_c"]

PathLike = str | os.PathLike[str]

_C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if "
    "inline int long register restrict return short signed sizeof static struct switch "
    "typedef union unsigned void volatile while _Bool _Complex _Imaginary _Alignas _Alignof "
    "_Atomic _Generic _Noreturn _Static_assert _Thread_local".split())

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_name(name) -> str:
    """`name` if it is a C identifier that is not a C keyword, else ValueError."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name) or name in _C_KEYWORDS:
        raise ValueError(f"name must be a C identifier that is not a C keyword "
                         f"(letters, digits and '_', not starting with a digit), got {name!r}")
    return name


def _literal(value, is_float: bool) -> str:
    text = float(value).hex()
    return text + "f" if is_float else text


def _activation(kind: str, v: str, t: str, suffix: str) -> str:
    """C expression of activation `kind` of variable `v` (type t)."""
    one = f"({t})1"
    if kind == "identity":
        return v
    if kind == "relu":
        return f"({v} <= 0 ? ({t})0 : {v})"
    if kind == "leaky_relu":
        return f"({v} > 0 ? {v} : ({t}){_codes.LEAKY_RELU_SLOPE!r} * {v})"
    if kind == "sigmoid":
        return (f"({v} >= 0 ? {one} / ({one} + exp{suffix}(-{v})) "
                f": exp{suffix}({v}) / ({one} + exp{suffix}({v})))")
    if kind == "tanh":
        return f"tanh{suffix}({v})"
    if kind == "step":
        return f"({v} > 0 ? {one} : ({t})0)"
    if kind == "elu":
        return f"({v} > 0 ? {v} : expm1{suffix}({v}))"
    if kind == "softplus":
        return f"(({v} > 0 ? {v} : ({t})0) + log1p{suffix}(exp{suffix}(-fabs{suffix}({v}))))"
    raise ValueError(f"cannot export activation {kind!r}")


def source(model, name: str):
    """(header text, source text) of `model` exported as `name`."""
    name = check_name(name)
    if getattr(model, "compute_dtype", None) is not None:
        raise ValueError("export_c does not export compute_dtype='bfloat16' models: set "
                         "model.compute_dtype = None first (a float32 copy of the numerics)")
    check_finite_model(model, "export_c")
    is_float = np.dtype(model.dtype) == np.float32
    t, suffix = ("float", "f") if is_float else ("double", "")
    upper = name.upper()
    sizes = list(model.layer_sizes)
    n_in, n_out = sizes[0], sizes[-1]
    widest = max(sizes[1:])
    output = model.output
    classifier = output in ("softmax", "sigmoid")

    h = [f"/* {name}.h -- {model!r}, exported by fusedmlp.export_c (C99, libm only). */",
         f"#ifndef {upper}_H", f"#define {upper}_H", "", "#include <stddef.h>",
         "#include <stdint.h>", "",
         f"#define {upper}_N_FEATURES {n_in}", f"#define {upper}_N_OUTPUTS {n_out}"]
    if classifier:
        h.append(f"#define {upper}_N_CLASSES {n_out if output == 'softmax' or n_out > 1 else 2}")
    h += [f"#define {upper}_OK 0", f"#define {upper}_BAD_ARGUMENT 1",
          f"#define {upper}_BAD_INPUT 2", f"#define {upper}_BAD_OUTPUT 3", "",
          "#ifdef __cplusplus", 'extern "C" {', "#endif"]
    if classifier:
        h += [f"int {name}_predict_proba(const {t} *x, size_t rows, {t} *out);",
              f"int {name}_predict(const {t} *x, size_t rows, int32_t *labels);"]
    else:
        h += [f"int {name}_predict(const {t} *x, size_t rows, {t} *out);"]
    h += ["#ifdef __cplusplus", "}", "#endif", f"#endif /* {upper}_H */", ""]

    c = [f"/* {name}.c -- {model!r}, exported by fusedmlp.export_c. */",
         "#include <math.h>", "#include <stddef.h>", "#include <stdint.h>",
         f'#include "{name}.h"', ""]
    for i, layer in enumerate(model.layers):
        W = np.asarray(layer.W).ravel()
        b = np.asarray(layer.b).ravel()
        for label, values in (("W", W), ("b", b)):
            c.append(f"static const {t} {name}_{label}{i}[{values.size}] = {{")
            items = [_literal(v, is_float) for v in values]
            for start in range(0, len(items), 6):
                c.append("    " + ", ".join(items[start:start + 6]) + ",")
            c.append("};")
    c.append("")
    # one row through the network into z (n_out scores); returns nothing
    c += [f"static void {name}_scores(const {t} *x, {t} *z)", "{",
          f"    {t} buf[2][{widest}];", f"    const {t} *in = x;", "    size_t j, k;"]
    for i, layer in enumerate(model.layers):
        a, bsz = layer.W.shape
        last = i == len(model.layers) - 1
        dest = "z" if last else f"buf[{i % 2}]"
        c += [f"    {{ {t} *o = {dest};",
              f"      for (j = 0; j < {bsz}; j++) o[j] = 0;",
              f"      for (k = 0; k < {a}; k++) {{ {t} xk = in[k]; "
              f"const {t} *w = {name}_W{i} + k * {bsz};",
              f"          for (j = 0; j < {bsz}; j++) o[j] += xk * w[j]; }}",
              f"      for (j = 0; j < {bsz}; j++) {{ {t} v = o[j] + {name}_b{i}[j]; "
              f"o[j] = {_activation('identity' if last else layer.activation, 'v', t, suffix)}; }}",
              "      in = o; }"]
    c += ["    (void)in;", "}", ""]
    # input check
    c += [f"static int {name}_finite(const {t} *v, size_t n)", "{", "    size_t i; int bad = 0;",
          "    for (i = 0; i < n; i++) bad |= (v[i] - v[i]) != 0;", "    return !bad;", "}", ""]

    def head(outname: str) -> list:
        """Body computing the output activation of z into out row (`outname`)."""
        if output == "softmax":
            return ["        { double s = 0; " + t + " mx = z[0];",
                    f"          for (j = 1; j < {n_out}; j++) mx = z[j] > mx ? z[j] : mx;",
                    f"          for (j = 0; j < {n_out}; j++) {{ z[j] = exp{suffix}(z[j] - mx); "
                    "s += z[j]; }",
                    f"          for (j = 0; j < {n_out}; j++) {outname}[j] = z[j] * ({t})(1.0 / s); }}"]
        if output == "sigmoid":
            return [f"        for (j = 0; j < {n_out}; j++) {{ double v = z[j], e = exp(-fabs(v));",
                    f"            {outname}[j] = ({t})((v >= 0 ? 1.0 : e) / (1.0 + e)); }}"]
        if output == "exp":
            return [f"        for (j = 0; j < {n_out}; j++) {outname}[j] = ({t})exp((double)z[j]);"]
        return [f"        for (j = 0; j < {n_out}; j++) {outname}[j] = z[j];"]

    def entry(signature: str, body: list, out_arg: str) -> list:
        return [signature, "{", "    size_t i, j;", f"    {t} z[{n_out}];",
                f"    int status = {upper}_OK;",
                f"    if (rows > 0 && (x == NULL || {out_arg} == NULL)) return {upper}_BAD_ARGUMENT;",
                f"    if (!{name}_finite(x, rows * {n_in})) return {upper}_BAD_INPUT;",
                "    for (i = 0; i < rows; i++) {",
                f"        {name}_scores(x + i * {n_in}, z);"] + body + [
                "    }", "    return status;", "}", ""]

    finite_out = (f"        if (!{name}_finite(out + i * {n_out}, {n_out})) "
                  f"status = {upper}_BAD_OUTPUT;")
    if classifier:
        c += entry(f"int {name}_predict_proba(const {t} *x, size_t rows, {t} *out)",
                   head(f"(out + i * {n_out})") + [finite_out], "out")
        if output == "softmax":
            label_body = ["        { int32_t best = 0; int ok = 1;",
                     f"          for (j = 0; j < {n_out}; j++) ok &= (z[j] - z[j]) == 0;",
                     f"          for (j = 1; j < {n_out}; j++) if (z[j] > z[best]) best = (int32_t)j;",
                     f"          if (!ok) status = {upper}_BAD_OUTPUT;",
                     "          labels[i] = best; }"]
        else:
            label_body = [f"        for (j = 0; j < {n_out}; j++) {{",
                     f"            if ((z[j] - z[j]) != 0) status = {upper}_BAD_OUTPUT;",
                     f"            labels[i * {n_out} + j] = z[j] > 0; }}"]
        c += entry(f"int {name}_predict(const {t} *x, size_t rows, int32_t *labels)", label_body,
                   "labels")
    else:
        c += entry(f"int {name}_predict(const {t} *x, size_t rows, {t} *out)",
                   head(f"(out + i * {n_out})") + [finite_out], "out")
    return "\n".join(h), "\n".join(c) + "\n"


def export_c(model, directory: PathLike, *, name: str = "fusedmlp_model"):
    """Write `model` as ``<name>.h`` and ``<name>.c`` into `directory` (created if needed);
    returns the two paths. `model` is an :class:`~fusedmlp.MLP` or a fitted estimator of
    :mod:`fusedmlp.sklearn` (its ``model_``)."""
    inner = getattr(model, "model_", None) if not hasattr(model, "layer_sizes") else model
    if inner is None:
        raise ValueError(f"export_c needs an MLP or a fitted estimator, got an unfitted "
                         f"{type(model).__name__}")
    header, code = source(inner, name)
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    paths = (os.path.join(directory, name + ".h"), os.path.join(directory, name + ".c"))
    for path, text in zip(paths, (header, code)):
        with open(path, "w", encoding="ascii") as handle:
            handle.write(text)
    return paths
