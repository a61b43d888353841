"""Export a trained :class:`fusedmlp.MLP` as dependency-free C99 inference code.

``export_c(model, directory, name=...)`` writes ``<name>.h`` and ``<name>.c``: the weights as
``static const`` arrays of hexadecimal float literals (exact round trip) and one function per
entry point, C99 plus libm, no allocation, no BLAS, no intrinsics (docs/export_c.md).

Entry points (``T`` is ``float`` or ``double``, the model's dtype), each returning 0 on
success, ``<NAME>_BAD_ARGUMENT`` (1) for a NULL pointer with ``rows > 0`` (or ``rows *
<NAME>_N_FEATURES`` beyond ``SIZE_MAX``), ``<NAME>_BAD_INPUT`` (2) when ``x`` holds NaN or inf
(as ``predict_proba`` refuses it; nothing written) and ``<NAME>_BAD_OUTPUT`` (3) for a
non-finite output (``predict_proba``'s ``FloatingPointError``):

- classifiers (``output="softmax"`` or ``"sigmoid"``):
  ``int <name>_predict_proba(const T *x, size_t rows, T *out)`` (``out``: ``rows x
  <NAME>_N_OUTPUTS``, as ``MLP.predict_proba``; an estimator with two classes: two columns
  ``[1 - p, p]`` as its ``predict_proba``) and
  ``int <name>_predict(const T *x, size_t rows, int32_t *labels)`` (``rows x <NAME>_N_LABELS``:
  softmax, the argmax, ties to the first; sigmoid, the probability above 1/2, as ``predict``);
- regressors (``"identity"``, ``"exp"``): ``int <name>_predict(const T *x, size_t rows, T *out)``.

Macros: ``<NAME>_N_FEATURES``, ``_N_OUTPUTS``, ``_N_LABELS`` and ``_N_CLASSES`` (classifiers),
``_ROW_BLOCK`` and ``_STACK_BYTES``; for a fitted classifier its ``classes_`` as
``<NAME>_CLASSES`` (integer or float labels) or ``<NAME>_CLASS_NAMES`` (strings), an
initializer list in which ``labels[i]`` indexes.

The computation is fusedmlp's: per layer the product (a plain loop over the fan-in, rows in
blocks of ``<NAME>_ROW_BLOCK`` so that each pass over the weights serves several rows), then
the bias, then the activation by the formulas of csrc/elementwise_impl.h with libm's exp,
expm1 and log1p; softmax with the row maximum subtracted and the sum in double; the output
logistic and exp in double. The scratch is on the stack: ``2 x ROW_BLOCK x widest`` values,
the block shrunk (down to one row) to keep it within 64 KiB; ``<NAME>_STACK_BYTES`` says how
much a call takes. Dropout is not part of inference and is ignored. A ``compute_dtype="bfloat16"``
model exports its numerics: the weights rounded to bfloat16 (to nearest even, subnormals to
zero) and written as floats, each layer's input rounded so (``<name>_bf16``) as the products
read it, the sums in float32.
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
    """`value` as an exact hexadecimal C literal; the mantissa's trailing zeros dropped (a
    float32 needs 6 hex digits of the 13 that float.hex writes: 30 % less source)."""
    mantissa, exponent = float(value).hex().split("p")
    text = mantissa.rstrip("0").rstrip(".") + "p" + exponent
    return text + "f" if is_float else text


# fusedmlp's own formulas (csrc/elementwise_impl.h), with libm's exp/expm1/log1p of the type
_ACTIVATION_BODIES = {
    "sigmoid": ["T e = EXP(-FABS(v));", "T r = (T)1 / ((T)1 + e);", "return v >= 0 ? r : e * r;"],
    "tanh": ["T u = EXPM1(-2 * FABS(v));", "return COPYSIGN(FABS(u) / ((T)2 + u), v);"],
    "elu": ["return v > 0 ? v : EXPM1(v);"],
    "softplus": ["return (v > 0 ? v : (T)0) + LOG1P(EXP(-FABS(v)));"],
    "step": ["return v > 0 ? (T)1 : (v <= 0 ? (T)0 : v);"],
}


def _activation(kind: str, v: str, t: str, name: str) -> str:
    """C expression of activation `kind` of variable `v` (type t)."""
    if kind == "identity":
        return v
    if kind == "relu":
        return f"({v} <= 0 ? ({t})0 : {v})"
    if kind == "leaky_relu":
        return f"({v} > 0 ? {v} : ({t}){_codes.LEAKY_RELU_SLOPE!r} * {v})"
    if kind in _ACTIVATION_BODIES:
        return f"{name}_{kind}({v})"
    raise ValueError(f"cannot export activation {kind!r}")


def _activation_function(kind: str, t: str, suffix: str, name: str) -> list:
    body = _ACTIVATION_BODIES[kind]
    libm = {"EXPM1": "expm1", "EXP": "exp", "FABS": "fabs", "COPYSIGN": "copysign",
            "LOG1P": "log1p"}
    lines = [f"static {t} {name}_{kind}({t} v)", "{"]
    for line in body:
        line = re.sub(r"\b(EXPM1|EXP|FABS|COPYSIGN|LOG1P)\b",
                      lambda m: libm[m.group(1)] + suffix, line)
        lines.append("    " + re.sub(r"\bT\b", t, line))
    return lines + ["}", ""]


def _c_string(text: str) -> str:
    """`text` as a C string literal (UTF-8; anything but printable ASCII as octal escapes)."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in '"\\?':
            out.append("\\" + char)
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _integer_literal(value: int) -> str:
    if -2 ** 31 < value < 2 ** 31:
        return str(value)
    if value == -2 ** 63:
        return "(-9223372036854775807LL - 1)"
    return f"{value}LL" if value < 2 ** 63 else f"{value}ULL"


def _class_macros(upper: str, classes) -> list:
    """The header's macro of the class labels, or a comment saying why there is none."""
    if classes is None:
        return []
    classes = np.asarray(classes)
    values = classes.tolist()
    if classes.dtype.kind in "iub":
        items = [_integer_literal(int(v)) for v in values]
        what = "the integer class labels"
        macro = f"{upper}_CLASSES"
    elif classes.dtype.kind == "f":
        items = [float(v).hex() for v in values]
        what = "the class labels (double)"
        macro = f"{upper}_CLASSES"
    elif all(isinstance(v, str) for v in values):
        items = [_c_string(v) for v in values]
        what = "the class labels as UTF-8 strings"
        macro = f"{upper}_CLASS_NAMES"
    else:
        return ["/* The classes' labels are not integers, floats or strings: predict gives the",
                " * index of each row's class in the estimator's classes_. */"]
    return [f"/* {what}, in the estimator's classes_ order: {macro}[labels[i]] is the",
            " * estimator's predict (e.g. static const ... classes[] = " + macro + ";) */",
            f"#define {macro} {{ " + ", ".join(items) + " }"]


def round_bf16(values) -> np.ndarray:
    """float32 `values` rounded to bfloat16 (to nearest, ties to even; subnormals to signed
    zero, as the bf16 product reads them), as float32."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits[(bits & 0x7F800000) == 0] &= 0x80000000
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


_ROW_BLOCK = 8                  # rows per pass through the network
_BLOCK_SCRATCH = 64 * 1024      # the most stack the row block may take (bytes)
_UNROLL = 8                     # rows of W (fan-in terms) per pass over a layer's outputs


def source(model, name: str, *, classes=None, two_columns: bool = False):
    """(header text, source text) of `model` exported as `name`. `classes`: an estimator's
    ``classes_`` (the header gets them as a macro); `two_columns`: a one-unit sigmoid model's
    predict_proba writes ``[1 - p, p]`` as scikit-learn's binary classifiers do."""
    name = check_name(name)
    compute = getattr(model, "compute_dtype", None)
    if compute not in (None, "bfloat16"):
        raise ValueError(f"export_c exports compute_dtype None or 'bfloat16', got {compute!r}")
    bf16 = compute == "bfloat16"
    check_finite_model(model, "export_c")
    is_float = np.dtype(model.dtype) == np.float32
    t, suffix = ("float", "f") if is_float else ("double", "")
    size = 4 if is_float else 8
    upper = name.upper()
    sizes = list(model.layer_sizes)
    n_in, n_scores = sizes[0], sizes[-1]
    widest = max(sizes[1:])
    output = model.output
    classifier = output in ("softmax", "sigmoid")
    two_columns = bool(two_columns) and output == "sigmoid" and n_scores == 1
    n_out = 2 if two_columns else n_scores
    n_labels = 1 if output == "softmax" or n_scores == 1 else n_scores
    block = max(1, min(_ROW_BLOCK, _BLOCK_SCRATCH // (2 * widest * size)))
    stack = (2 * block * widest + block * n_scores) * size
    rb = f"{upper}_ROW_BLOCK"

    h = [f"/* {name}.h -- {model!r}, exported by fusedmlp.export_c (C99, libm only).",
         " * Every function returns " + upper + "_OK (0) or a code below; x is rows x",
         f" * {upper}_N_FEATURES values, row-major; nothing is allocated (the scratch,",
         f" * {upper}_STACK_BYTES, is on the stack); the functions are reentrant. */",
         f"#ifndef {upper}_H", f"#define {upper}_H", "", "#include <stddef.h>",
         "#include <stdint.h>", "",
         f"#define {upper}_N_FEATURES {n_in}",
         f"/* columns of each row of predict_proba's (regressors: predict's) output */",
         f"#define {upper}_N_OUTPUTS {n_out}"]
    if classifier:
        h += [f"/* int32 labels predict writes per row (1: a class index; more: 0/1 per label) */",
              f"#define {upper}_N_LABELS {n_labels}",
              f"#define {upper}_N_CLASSES "
              f"{n_scores if output == 'softmax' or n_scores > 1 else 2}"]
        h += _class_macros(upper, classes)
    h += [f"/* rows per pass through the network, and the stack one call takes (bytes) */",
          f"#define {rb} {block}", f"#define {upper}_STACK_BYTES {stack}",
          f"#define {upper}_OK 0",
          f"/* a NULL pointer with rows > 0, or rows * {upper}_N_FEATURES beyond SIZE_MAX */",
          f"#define {upper}_BAD_ARGUMENT 1",
          "/* x holds NaN or infinity (nothing is written) */",
          f"#define {upper}_BAD_INPUT 2",
          "/* an output is not finite (the model overflowed); the other rows are written */",
          f"#define {upper}_BAD_OUTPUT 3", "",
          "#ifdef __cplusplus", 'extern "C" {', "#endif"]
    if classifier:
        h += [f"/* out: rows x {upper}_N_OUTPUTS probabilities (columns in class order) */",
              f"int {name}_predict_proba(const {t} *x, size_t rows, {t} *out);",
              f"/* labels: rows x {upper}_N_LABELS (the index of the most probable class, or 0/1 "
              "per label) */",
              f"int {name}_predict(const {t} *x, size_t rows, int32_t *labels);"]
    else:
        h += [f"/* out: rows x {upper}_N_OUTPUTS predictions */",
              f"int {name}_predict(const {t} *x, size_t rows, {t} *out);"]
    h += ["#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {upper}_H */", ""]

    c = [f"/* {name}.c -- {model!r}, exported by fusedmlp.export_c.",
         " * C99 and libm; do not compile with -ffast-math or -ffinite-math-only (the NaN and",
         " * infinity checks would be optimised away). */",
         "#include <math.h>", "#include <stddef.h>", "#include <stdint.h>"]
    c += ["#include <string.h>"] if bf16 else []
    c += [f'#include "{name}.h"', ""]
    for i, layer in enumerate(model.layers):
        W = np.asarray(layer.W).ravel()
        b = np.asarray(layer.b).ravel()
        if bf16:                # the product's weight operand, as the bf16 kernel reads it
            W = round_bf16(W)
            if not np.isfinite(W).all():
                raise ValueError(f"export_c: layer {i}'s weights overflow to infinity when "
                                 "rounded to bfloat16 (the model's compute_dtype)")
        for label, values in (("W", W), ("b", b)):
            c.append(f"static const {t} {name}_{label}{i}[{values.size}] = {{")
            items = [_literal(v, is_float) for v in values]
            for start in range(0, len(items), 6):
                c.append("    " + ", ".join(items[start:start + 6]) + ",")
            c.append("};")
    c.append("")
    used = sorted({layer.activation for layer in model.layers[:-1]} & set(_ACTIVATION_BODIES))
    for kind in used:
        c += _activation_function(kind, t, suffix, name)
    operand = ""
    if bf16:
        operand = f"{name}_bf16"
        c += [f"/* v rounded to bfloat16 (to nearest, ties to even; subnormals read as zero), as a",
              " * float: what compute_dtype='bfloat16' makes of every product's operands */",
              f"static float {operand}(float v)", "{", "    uint32_t bits;",
              "    memcpy(&bits, &v, sizeof bits);",
              "    if ((bits & 0x7F800000u) == 0) bits &= 0x80000000u;",
              "    else if ((bits & 0x7F800000u) == 0x7F800000u)",
              "        bits = (bits & 0x7FFFFFu) ? (bits | 0x400000u) & 0xFFFF0000u : bits;",
              "    else bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;",
              "    memcpy(&v, &bits, sizeof v);", "    return v;", "}", ""]
    # nr <= ROW_BLOCK rows of x through the network into z (nr x n_scores scores): for each
    # layer o = in W, then o = f(o + b): fusedmlp's order of the sums (a gemm, then the bias).
    # The fan-in is taken _UNROLL rows of W at a time: o[j] is loaded once, gets the _UNROLL
    # products added in k order (the same roundings as one k at a time) and is stored once,
    # so the contiguous j loop does one load and one store of o per _UNROLL multiply-adds
    # (one at a time it was load-bound: 2x slower at one row under gcc -O2); the _UNROLL
    # rows of W serve every row of the block from L1.
    c += [f"/* rows [0, nr) of x, nr <= {rb}, through the network: z gets nr x {n_scores} "
          "scores */",
          f"static void {name}_scores(const {t} *restrict x, size_t nr, {t} *restrict z)", "{",
          f"    {t} buf0[{rb} * {widest}], buf1[{rb} * {widest}];", "    size_t r, j"
          + (", k;" if any(layer.W.shape[0] >= _UNROLL for layer in model.layers) else ";")]
    for i, layer in enumerate(model.layers):
        a, bsz = layer.W.shape
        last = i == len(model.layers) - 1
        src = "x" if i == 0 else f"buf{(i - 1) % 2}"
        dest = "z" if last else f"buf{i % 2}"
        act = _activation("identity" if last else layer.activation, "v", t, name)
        c += [f"    /* layer {i}: {a} -> {bsz}, {'scores' if last else layer.activation} */",
              f"    for (r = 0; r < nr * {bsz}; r++) {dest}[r] = 0;"]
        full = a - a % _UNROLL
        for k0, u in ((("k", _UNROLL),) if full else ()) + (((str(full), a - full),)
                                                            if a > full else ()):
            looped = k0 == "k"
            pad = "        "
            c += ([f"    for (k = 0; k < {full}; k += {_UNROLL}) {{"] if looped else ["    {"])
            c += [f"{pad}const {t} *restrict w{q} = {name}_W{i} + "
                  + (f"(k + {q}) * {bsz};" if looped else f"{(full + q) * bsz};")
                  for q in range(u)]
            c += [f"{pad}for (r = 0; r < nr; r++) {{",
                  f"{pad}    {t} *restrict o = {dest} + r * {bsz};",
                  f"{pad}    const {t} *xr = {src} + r * {a} + {k0};"]
            c += [f"{pad}    const {t} x{q} = " + (f"{operand}(xr[{q}]);" if operand else
                                                  f"xr[{q}];") for q in range(u)]
            c += [f"{pad}    for (j = 0; j < {bsz}; j++) {{", f"{pad}        {t} s = o[j];"]
            c += [f"{pad}        s += x{q} * w{q}[j];" for q in range(u)]
            c += [f"{pad}        o[j] = s;", f"{pad}    }}", f"{pad}}}", "    }"]
        c += ["    for (r = 0; r < nr; r++) {",
              f"        {t} *restrict o = {dest} + r * {bsz};",
              f"        for (j = 0; j < {bsz}; j++) {{ const {t} v = o[j] + {name}_b{i}[j]; "
              f"o[j] = {act}; }}",
              "    }"]
    if len(model.layers) == 1:
        c += ["    (void)buf0; (void)buf1;"]
    elif len(model.layers) == 2:
        c += ["    (void)buf1;"]
    c += ["}", ""]
    c += [f"/* 1 when v[0:n] holds no NaN or infinity (v - v is 0 exactly then) */",
          f"static int {name}_finite(const {t} *v, size_t n)", "{", "    size_t i; int bad = 0;",
          "    for (i = 0; i < n; i++) bad |= (v[i] - v[i]) != 0;", "    return !bad;", "}", ""]

    def sigmoid_double(v: str) -> str:
        return f"{name}_logistic({v})"

    if output == "sigmoid":     # the output's logistic in double, as predict_proba's
        c += [f"static double {name}_logistic(double v)", "{", "    const double e = exp(-fabs(v));",
              "    return (v >= 0 ? 1.0 : e) / (1.0 + e);", "}", ""]

    def head() -> list:
        """Statements writing row s (scores) as probabilities or predictions into o."""
        if output == "softmax":
            return [f"            double sum = 0; {t} mx = s[0];",
                    f"            for (j = 1; j < {n_scores}; j++) mx = s[j] > mx ? s[j] : mx;",
                    f"            for (j = 0; j < {n_scores}; j++) {{ o[j] = exp{suffix}(s[j] - mx); "
                    "sum += o[j]; }",
                    f"            {{ const {t} inv = ({t})(1.0 / sum);",
                    f"              for (j = 0; j < {n_scores}; j++) o[j] *= inv; }}"]
        if output == "sigmoid" and two_columns:
            return ["            const double v = s[0];",
                    f"            o[0] = ({t}){sigmoid_double('-v')};",
                    f"            o[1] = ({t}){sigmoid_double('v')};"]
        if output == "sigmoid":
            return [f"            for (j = 0; j < {n_scores}; j++) {{ const double v = s[j];",
                    f"                o[j] = ({t}){sigmoid_double('v')}; }}"]
        if output == "exp":
            return [f"            for (j = 0; j < {n_scores}; j++) o[j] = ({t})exp((double)s[j]);"]
        return [f"            for (j = 0; j < {n_scores}; j++) o[j] = s[j];"]

    def entry(signature: str, out_arg: str, out_type: str, per_row: int, body: list) -> list:
        return [signature, "{", f"    {t} z[{rb} * {n_scores}];", "    size_t i0, i, j;",
                f"    int status = {upper}_OK;", "    (void)j;",
                "    if (rows == 0) return status;",
                f"    if (x == NULL || {out_arg} == NULL || rows > SIZE_MAX / {n_in}) "
                f"return {upper}_BAD_ARGUMENT;",
                f"    if (!{name}_finite(x, rows * {n_in})) return {upper}_BAD_INPUT;",
                f"    for (i0 = 0; i0 < rows; i0 += {rb}) {{",
                f"        const size_t nr = rows - i0 < {rb} ? rows - i0 : {rb};",
                f"        {name}_scores(x + i0 * {n_in}, nr, z);",
                "        for (i = 0; i < nr; i++) {",
                f"            const {t} *s = z + i * {n_scores};",
                f"            {out_type} *o = {out_arg} + (i0 + i) * {per_row};"] + body + [
                "        }", "    }", "    return status;", "}", ""]

    finite_out = [f"            if (!{name}_finite(o, {n_out})) status = {upper}_BAD_OUTPUT;"]
    if classifier:
        c += entry(f"int {name}_predict_proba(const {t} *x, size_t rows, {t} *out)", "out", t,
                   n_out, head() + finite_out)
        if output == "softmax":
            label_body = ["            int32_t best = 0;",
                          f"            if (!{name}_finite(s, {n_scores})) status = "
                          f"{upper}_BAD_OUTPUT;",
                          f"            for (j = 1; j < {n_scores}; j++) "
                          "if (s[j] > s[best]) best = (int32_t)j;",
                          "            o[0] = best;"]
        else:
            # as MLP.predict: the probability (rounded to the model's type) above 1/2
            label_body = [f"            for (j = 0; j < {n_scores}; j++) {{",
                          "                const double v = s[j];",
                          f"                const {t} p = ({t}){sigmoid_double('v')};",
                          f"                if ((v - v) != 0) status = {upper}_BAD_OUTPUT;",
                          "                o[j] = p > 0.5; }"]
        c += entry(f"int {name}_predict(const {t} *x, size_t rows, int32_t *labels)", "labels",
                   "int32_t", n_labels, label_body)
    else:
        c += entry(f"int {name}_predict(const {t} *x, size_t rows, {t} *out)", "out", t, n_out,
                   head() + finite_out)
    return "\n".join(h), "\n".join(c) + "\n"


def export_c(model, directory: PathLike, *, name: str = "fusedmlp_model"):
    """Write `model` as ``<name>.h`` and ``<name>.c`` into `directory` (created if needed);
    returns the two paths. `model` is an :class:`~fusedmlp.MLP` or a fitted estimator of
    :mod:`fusedmlp.sklearn`: an estimator's network (``model_``) with a classifier's
    ``classes_`` in the header and, for two classes, predict_proba's two columns
    ``[1 - p, p]`` as the estimator's ``predict_proba``."""
    classes, two_columns = None, False
    if hasattr(model, "layer_sizes"):
        inner = model
    else:
        inner = getattr(model, "model_", None)
        if inner is None:
            raise ValueError(f"export_c needs an MLP or a fitted estimator, got an unfitted "
                             f"{type(model).__name__}")
        classes = getattr(model, "classes_", None)
        two_columns = classes is not None and getattr(model, "n_outputs_", None) == 1
    header, code = source(inner, name, classes=classes, two_columns=two_columns)
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    paths = (os.path.join(directory, name + ".h"), os.path.join(directory, name + ".c"))
    for path, text in zip(paths, (header, code)):
        with open(path, "w", encoding="ascii") as handle:
            handle.write(text)
    return paths
