"""A fuzz target for ``fusedmlp.load``: no input may do anything but load or raise ValueError.

Structure-aware: each input is a valid model file (one of a few seeds, with and without an
optimiser, stored and deflated) changed by a chain of mutations chosen from the fuzzer's
bytes: raw byte flips, truncations and insertions (which mostly test the archive layer: a
flipped byte usually breaks a CRC), and mutations applied *below* the archive, re-zipped
with correct CRCs so that they reach the parsers behind it: JSON header fields set to
arbitrary JSON values, ``.npy`` preambles and data rewritten, members dropped, duplicated,
renamed or added, optimiser hyper-parameter slots set to hostile numbers.

The oracle: ``load(file, with_optimizer=True)`` either raises ``ValueError`` or returns a
model that runs (``forward`` on finite inputs; FloatingPointError is allowed there, for
finite weights so large that the outputs overflow) and an optimiser bound to it. Anything
else (another exception, a crash, a hang) is a bug.

Run it:

    python tests/fuzz_load.py -max_total_time=60      # atheris (pip install atheris), libFuzzer flags
    python tests/fuzz_load.py --hypothesis 2000       # without atheris: hypothesis, 2000 inputs

The test suite runs a short hypothesis run (tests/test_io.py::test_fuzz_load_short_run).
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import warnings
import zipfile

import numpy as np

import fusedmlp

_HOSTILE_NUMBERS = [0.0, -0.0, -1.0, 1.0, 7.0, 0.5, 1e300, -1e300, 2.0**53, 2.0**53 + 2,
                    2.0**64, float("nan"), float("inf"), -float("inf"), 5e-324, 1e-8]
_HOSTILE_JSON = [None, True, False, 0, 1, -1, 2**31, 2**63, 10**30, 1.5, "", "x", "float32",
                 "float16", "softmax", "Adam", "SGD", "Optimizer", [], [1], [0, 0],
                 [3, 2**31], {}, {"a": 1}, [[[]]], "fusedmlp.MLP"]


def seeds():
    """Valid model files (bytes): the starting points of every mutation."""
    files = []
    for dtype, optimizer, sizes in [(np.float32, None, [3, 2]),
                                    (np.float32, fusedmlp.Adam(0.01), [3, 4, 2]),
                                    (np.float64, fusedmlp.SGD(0.1, momentum=0.9, nesterov=True),
                                     [2, 3, 3, 1]),
                                    (np.float64, fusedmlp.RMSProp(0.01), [2, 2])]:
        output = "identity" if sizes[-1] == 1 else "softmax"
        model = fusedmlp.MLP(sizes, output=output, dtype=dtype, seed=0)
        X = np.linspace(-1, 1, 4 * sizes[0]).reshape(4, sizes[0])
        y = np.zeros((4, 1)) if output == "identity" else np.array([0, 1, 0, 1])
        if optimizer is not None:
            model.train_step(X, y, optimizer)
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "m.npz")
            model.save(path, optimizer=optimizer)
            with open(path, "rb") as f:
                files.append(f.read())
    return files


def _members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def _rezip(members, compression):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")            # duplicate names are wanted here
        for name, content in members:
            archive.writestr(name, content)
    return buffer.getvalue()


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _json_value(source, depth=0):
    kind = source.integer(0, 5 if depth < 3 else 2)
    if kind <= 2:
        return _HOSTILE_JSON[source.integer(0, len(_HOSTILE_JSON) - 1)]
    if kind == 3:
        return source.integer(-2**40, 2**40)
    if kind == 4:
        return [_json_value(source, depth + 1) for _ in range(source.integer(0, 4))]
    return {str(_json_value(source, depth + 1)): _json_value(source, depth + 1)
            for _ in range(source.integer(0, 3))}


def _mutate_members(members, source):
    """One mutation below the archive layer (members is a list of (name, bytes))."""
    kind = source.integer(0, 6)
    if not members:
        return members
    index = source.integer(0, len(members) - 1)
    name, content = members[index]
    if kind == 0:                                          # a header field
        header_at = [i for i, (n, _) in enumerate(members) if n == "header.npy"]
        if header_at:
            i = header_at[0]
            try:
                text = np.load(io.BytesIO(members[i][1]), allow_pickle=False).tobytes()
                header = json.loads(text)
            except Exception:
                return members
            if isinstance(header, dict):
                keys = sorted(header) + ["extra"]
                header[keys[source.integer(0, len(keys) - 1)]] = _json_value(source)
                encoded = np.frombuffer(json.dumps(header).encode(), np.uint8)
                members[i] = ("header.npy", _npy(encoded))
    elif kind == 1:                                        # bytes inside a member
        at = source.integer(0, max(0, len(content) - 1))
        patch = source.bytes(source.integer(1, 16))
        members[index] = (name, content[:at] + patch + content[at + len(patch):])
    elif kind == 2:                                        # a member cut short or grown
        cut = source.integer(0, len(content))
        members[index] = (name, content[:cut] + source.bytes(source.integer(0, 8)))
    elif kind == 3:                                        # dropped or duplicated
        if source.integer(0, 1):
            del members[index]
        else:
            members.append((name, content))
    elif kind == 4:                                        # renamed or a new member
        names = ["header.npy", "params.npy", "optimizer_hyper.npy", "optimizer_state_0.npy",
                 "optimizer_state_1.npy", "optimizer_state_2.npy", "junk.npy", "params"]
        new = names[source.integer(0, len(names) - 1)]
        if source.integer(0, 1):
            members[index] = (new, content)
        else:
            members.append((new, content))
    elif kind == 5:                                        # a hyper-parameter slot
        for i, (n, c) in enumerate(members):
            if n != "optimizer_hyper.npy":
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")        # (casts into a mutated dtype)
                    hyper = np.load(io.BytesIO(c), allow_pickle=False).copy()
                    hyper[source.integer(0, len(hyper) - 1)] = \
                        _HOSTILE_NUMBERS[source.integer(0, len(_HOSTILE_NUMBERS) - 1)]
                members[i] = (n, _npy(hyper))
            except Exception:
                pass
    else:                                                  # the .npy preamble's dict
        end = content.find(b"}")
        if content.startswith(b"\x93NUMPY") and end > 10:
            start = source.integer(10, end)
            patch = source.bytes(source.integer(1, 8))
            members[index] = (name, content[:start] + patch + content[start + len(patch):])
    return members


def mutated_file(source, files):
    """A model file made from one of `files` by mutations drawn from `source`."""
    data = files[source.integer(0, len(files) - 1)]
    members = _members(data)
    for _ in range(source.integer(0, 3)):
        members = _mutate_members(members, source)
    compression = zipfile.ZIP_DEFLATED if source.integer(0, 1) else zipfile.ZIP_STORED
    data = bytearray(_rezip(members, compression))
    if source.integer(0, 3) == 3:                           # raw damage to the archive itself
        kind = source.integer(0, 2)
        at = source.integer(0, max(0, len(data) - 1))
        if kind == 0:
            data[at:at + 1] = source.bytes(1) or b"\0"
        elif kind == 1:
            del data[at:]
        else:
            data[at:at] = source.bytes(source.integer(1, 32))
    return bytes(data)


def check(data: bytes) -> None:
    """The oracle: a loaded model or ValueError; anything else raises."""
    try:
        model, optimizer = fusedmlp.load(io.BytesIO(data), with_optimizer=True)
    except ValueError:
        return
    X = np.ones((2, model.n_features), model.dtype)
    try:
        model.forward(X)
    except FloatingPointError:
        pass                       # huge but finite weights may overflow: refused loudly
    if optimizer is not None:
        assert optimizer._model() is model


class _FromProvider:
    """atheris's FuzzedDataProvider as a mutation source."""

    def __init__(self, provider):
        self.provider = provider

    def integer(self, low, high):
        return self.provider.ConsumeIntInRange(low, high)

    def bytes(self, n):
        return self.provider.ConsumeBytes(n)


class _FromHypothesis:
    """hypothesis's st.data() as a mutation source."""

    def __init__(self, data):
        self.data = data

    def integer(self, low, high):
        from hypothesis import strategies as st
        return self.data.draw(st.integers(low, high))

    def bytes(self, n):
        from hypothesis import strategies as st
        return self.data.draw(st.binary(min_size=n, max_size=n))


def hypothesis_test(max_examples):
    """A hypothesis test function running `max_examples` mutated files through check."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    files = seeds()

    @settings(max_examples=max_examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def fuzz(data):
        check(mutated_file(_FromHypothesis(data), files))

    return fuzz


def main(argv):
    if len(argv) > 1 and argv[1] == "--hypothesis":
        n = int(argv[2]) if len(argv) > 2 else 1000
        hypothesis_test(n)()
        print(f"{n} mutated files: every one loaded or raised ValueError")
        return
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed (pip install atheris); or run "
                 "python tests/fuzz_load.py --hypothesis N")
    files = seeds()

    def one_input(data):
        check(mutated_file(_FromProvider(atheris.FuzzedDataProvider(data)), files))

    atheris.instrument_all()          # coverage feedback from the Python code loaded so far
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
