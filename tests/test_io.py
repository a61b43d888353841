"""Model files (save/load), hostile files, and pickling."""

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import fusedmlp
from fusedmlp import io as model_io

import oracle


def _trained(dtype, output="softmax", optimizer=None, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 5))
    n_out = 3 if output == "softmax" else 2
    y = rng.integers(0, 3, 60) if output == "softmax" else rng.normal(size=(60, n_out))
    model = fusedmlp.MLP([5, 7, 6, n_out], activation=["tanh", "elu"], output=output,
                         dtype=dtype, seed=seed)
    model.fit(X, y, epochs=2, batch_size=16, optimizer=optimizer or fusedmlp.Adam(0.01))
    return model, X, y


def _header(path):
    with np.load(path, allow_pickle=False) as archive:
        return json.loads(archive["header"].tobytes().decode())


def _rewrite(path, out, *, header_changes=None, drop=(), replace=None, extra=None):
    """Copy a saved model file, editing its header or arrays on the way."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays["header"].tobytes().decode())
    header.update(header_changes or {})
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    arrays.update(replace or {})
    arrays.update(extra or {})
    for name in drop:
        del arrays[name]
    with open(out, "wb") as f:
        np.savez(f, **arrays)
    return out


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("output", ["softmax", "identity"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_identical_predictions(tmp_path, dtype, output):
    model, X, _ = _trained(dtype, output)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fusedmlp.load(path)
    assert type(loaded) is fusedmlp.MLP
    assert loaded.layer_sizes == model.layer_sizes and loaded.activations == ["tanh", "elu"]
    assert loaded.output == output and loaded.dtype == dtype
    oracle.assert_same_bits(loaded.get_params_vector(), model.get_params_vector(), why=oracle.COPY)
    oracle.assert_same_bits(loaded.forward(X), model.forward(X), why=oracle.SAME_CALL)
    oracle.assert_same_bits(loaded.predict(X), model.predict(X), why=oracle.SAME_CALL)
    # a str path works as well as a pathlib.Path
    model.save(str(tmp_path / "again.npz"))
    oracle.assert_same_bits(fusedmlp.load(str(tmp_path / "again.npz")).forward(X),
                            model.forward(X), why=oracle.SAME_CALL)


@pytest.mark.parametrize("make", [lambda: fusedmlp.SGD(0.05, momentum=0.9, nesterov=True),
                                  lambda: fusedmlp.Adam(0.01, weight_decay=0.1),
                                  lambda: fusedmlp.AdamW(0.01), lambda: fusedmlp.RMSProp(0.01),
                                  lambda: fusedmlp.AdaGrad(0.05)],
                         ids=["sgd", "adam", "adamw", "rmsprop", "adagrad"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_with_optimizer_state_continues_identically(tmp_path, dtype, make):
    opt = make()
    opt.clip_norm = 5.0
    model, X, y = _trained(dtype, optimizer=opt)
    path = tmp_path / "model.npz"
    model.save(path, optimizer=opt)
    loaded, loaded_opt = fusedmlp.load(path, with_optimizer=True)
    assert type(loaded_opt) is type(opt) and repr(loaded_opt) == repr(opt)
    assert loaded_opt.steps == opt.steps > 0 and loaded_opt.clip_norm == 5.0
    for _ in range(3):                           # training goes on exactly as it would have
        assert loaded.train_step(X[:16], y[:16], loaded_opt) == model.train_step(X[:16], y[:16], opt)
    # the copied state, then the same steps
    oracle.assert_same_bits(loaded.get_params_vector(), model.get_params_vector(),
                            why=oracle.SAME_CALL)


def test_load_with_optimizer_when_the_file_has_none(tmp_path):
    model, X, _ = _trained(np.float32)
    model.save(tmp_path / "m.npz")
    loaded, opt = fusedmlp.load(tmp_path / "m.npz", with_optimizer=True)
    assert opt is None
    oracle.assert_same_bits(loaded.forward(X), model.forward(X), why=oracle.SAME_CALL)
    assert _header(tmp_path / "m.npz")["optimizer"] is None


def test_save_is_atomic(tmp_path, monkeypatch):
    old, X, _ = _trained(np.float32, seed=0)
    new, _, _ = _trained(np.float32, seed=1)
    path = tmp_path / "model.npz"
    old.save(path)
    old_bytes = path.read_bytes()
    new.save(path)                               # replaced, and no temporary file left over
    assert os.listdir(tmp_path) == ["model.npz"]
    oracle.assert_same_bits(fusedmlp.load(path).forward(X), new.forward(X), why=oracle.SAME_CALL)
    new_bytes = path.read_bytes()

    def fail_midway(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(model_io.np, "savez", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        old.save(path)
    assert path.read_bytes() == new_bytes        # the target is untouched ...
    assert os.listdir(tmp_path) == ["model.npz"]  # ... and the temporary file is gone
    monkeypatch.undo()
    old.save(path)
    assert path.read_bytes() == old_bytes        # deterministic: the same model, the same bytes


def test_save_with_an_unused_or_a_foreign_optimizer(tmp_path):
    model, X, y = _trained(np.float64)
    unused = fusedmlp.SGD(0.1, momentum=0.9)
    model.save(tmp_path / "m.npz", optimizer=unused)      # its state: zeros, of the model's size
    loaded, opt = fusedmlp.load(tmp_path / "m.npz", with_optimizer=True)
    assert opt.steps == 0 and opt.momentum == 0.9
    loaded.train_step(X, y, opt)
    model.train_step(X, y, unused)
    oracle.assert_same_bits(loaded.get_params_vector(), model.get_params_vector(), why=oracle.COPY)
    other, _, _ = _trained(np.float64, seed=1)
    with pytest.raises(ValueError, match="already in use with another model"):
        other.save(tmp_path / "other.npz", optimizer=unused)
    assert not (tmp_path / "other.npz").exists()


def test_missing_file_is_not_a_value_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        fusedmlp.load(tmp_path / "nowhere.npz")


# --------------------------------------------------------------------------- hostile files
@pytest.fixture
def saved(tmp_path):
    model, _, _ = _trained(np.float32, optimizer=fusedmlp.Adam(0.01))
    path = tmp_path / "good.npz"
    model.save(path, optimizer=fusedmlp.Adam(0.01))
    return path


def _corrupt_files(saved, tmp_path):
    """(id, path) of files that load() must refuse with ValueError."""
    data = saved.read_bytes()
    params = np.load(saved)["params"]
    files = {}
    files["truncated"] = tmp_path / "truncated.npz"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["truncated-tail"] = tmp_path / "tail.npz"
    files["truncated-tail"].write_bytes(data[:-10])
    files["random-bytes"] = tmp_path / "random.npz"
    files["random-bytes"].write_bytes(np.random.default_rng(0).bytes(4000))
    files["empty"] = tmp_path / "empty.npz"
    files["empty"].write_bytes(b"")
    files["plain-npy"] = tmp_path / "plain.npy"
    np.save(files["plain-npy"], params)
    nan_params = params.copy()
    nan_params[3] = np.nan
    edits = {
        "wrong-format-name": dict(header_changes={"format": "keras.Model"}),
        "unknown-version": dict(header_changes={"version": 2}),
        "version-as-string": dict(header_changes={"version": "1"}),
        "inconsistent-sizes": dict(header_changes={"layer_sizes": [5, 7, 6, 4]}),
        "wrong-n_parameters": dict(header_changes={"n_parameters": params.size + 1}),
        "too-few-activations": dict(header_changes={"activations": ["tanh"]}),
        "unknown-activation": dict(header_changes={"activations": ["tanh", "gelu"]}),
        "bad-output": dict(header_changes={"output": "softsign"}),
        "bad-dtype": dict(header_changes={"dtype": "float16"}),
        "dtype-mismatch": dict(header_changes={"dtype": "float64"}),
        "negative-size": dict(header_changes={"layer_sizes": [5, -7, 6, 3]}),
        "nan-params": dict(replace={"params": nan_params}),
        "short-params": dict(replace={"params": params[:-1]}),
        "2d-params": dict(replace={"params": params.reshape(1, -1)}),
        "missing-params": dict(drop=["params"]),
        "missing-header": dict(drop=["header"]),
        "header-not-json": dict(replace={"header": np.frombuffer(b"{not json", np.uint8)}),
        "header-not-utf8": dict(replace={"header": np.frombuffer(b"\xff\xfe\x00", np.uint8)}),
        "header-a-list": dict(replace={"header": np.frombuffer(b"[1, 2]", np.uint8)}),
        "unknown-optimizer": dict(header_changes={"optimizer": "Lion"}),
        "optimizer-not-a-class": dict(header_changes={"optimizer": "make_optimizer"}),
        "optimizer-state-missing": dict(drop=["optimizer_state_1"]),
        "optimizer-state-short": dict(replace={"optimizer_state_0": params[:-2]}),
        "optimizer-hyper-nan": dict(replace={"optimizer_hyper": np.full(8, np.nan)}),
        "optimizer-state-nan": dict(replace={"optimizer_state_1": nan_params}),
    }
    for name, edit in edits.items():
        files[name] = _rewrite(saved, tmp_path / f"{name}.npz", **edit)
    return files


CORRUPT = ["truncated", "truncated-tail", "random-bytes", "empty", "plain-npy",
           "wrong-format-name", "unknown-version", "version-as-string", "inconsistent-sizes",
           "wrong-n_parameters", "too-few-activations", "unknown-activation", "bad-output",
           "bad-dtype", "dtype-mismatch", "negative-size", "nan-params", "short-params",
           "2d-params", "missing-params", "missing-header", "header-not-json",
           "header-not-utf8", "header-a-list", "unknown-optimizer", "optimizer-not-a-class",
           "optimizer-state-missing", "optimizer-state-short", "optimizer-hyper-nan",
           "optimizer-state-nan"]


@pytest.mark.parametrize("name", CORRUPT)
def test_corrupt_files_are_refused(saved, tmp_path, name):
    path = _corrupt_files(saved, tmp_path)[name]
    with pytest.raises(ValueError, match="not a valid fusedmlp model file"):
        fusedmlp.load(path, with_optimizer=True)


def test_the_good_file_loads(saved):
    model, opt = fusedmlp.load(saved, with_optimizer=True)
    assert isinstance(opt, fusedmlp.Adam)


class _Explosive:
    """Unpickling this records that code ran."""

    ran = []

    def __reduce__(self):
        return (_Explosive.ran.append, ("unpickled!",))


@pytest.mark.parametrize("where", ["params", "extra", "header", "optimizer_state_0"])
def test_a_pickled_object_array_is_never_unpickled(saved, tmp_path, where):
    evil = np.array([_Explosive(), 1], dtype=object)
    path = tmp_path / "evil.npz"
    if where == "extra":
        _rewrite(saved, path, extra={"evil": evil})
    else:
        _rewrite(saved, path, replace={where: evil})
    assert b"unpickled!" in path.read_bytes()     # the payload really is in the file
    _Explosive.ran.clear()
    with pytest.raises(ValueError, match="not a valid fusedmlp model file"):
        fusedmlp.load(path, with_optimizer=True)
    assert _Explosive.ran == []


def test_a_zip_with_other_members_is_refused(tmp_path):
    path = tmp_path / "other.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="not a valid fusedmlp model file"):
        fusedmlp.load(path)


# --------------------------------------------------------------------------- pickle
@pytest.mark.parametrize("output", ["softmax", "identity"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pickle_round_trip_is_small_and_identical(dtype, output):
    model, X, y = _trained(dtype, output)
    model.loss_and_gradients(np.repeat(X, 20, axis=0), np.concatenate([y] * 20))  # big workspace
    data = pickle.dumps(model)
    params_bytes = model.get_params_vector().nbytes
    # the weights and a few hundred bytes of configuration: no workspace, no gradients
    assert len(data) < params_bytes + 1500, (len(data), params_bytes)
    clone = pickle.loads(data)
    assert repr(clone) == repr(model)
    oracle.assert_same_bits(clone.get_params_vector(), model.get_params_vector(), why=oracle.COPY)
    oracle.assert_same_bits(clone.forward(X), model.forward(X), why=oracle.SAME_CALL)
    # the clone's layers are views into its own buffer, not into the original's
    clone.layers[0].W[...] = 0
    assert model.layers[0].W.any()
    # and the random state came along: the same fit gives the same weights
    model.fit(X, y, epochs=2, batch_size=8)
    restored = pickle.loads(data)
    restored.fit(X, y, epochs=2, batch_size=8)
    oracle.assert_same_bits(restored.get_params_vector(), model.get_params_vector(),
                            why=oracle.COPY)


def test_pickle_through_a_file_object():
    model, X, _ = _trained(np.float32)
    buffer = io.BytesIO()
    pickle.dump(model, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    buffer.seek(0)
    oracle.assert_same_bits(pickle.load(buffer).predict_proba(X), model.predict_proba(X),
                            why=oracle.SAME_CALL)


# --------------------------------------------------------------------------- issue 14: files
# Helpers that build archives member by member, so that hostile zip-level details (compression
# method, flags, declared sizes, extra members) can be set precisely.
def _members(path):
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _zip(out, members, compress=zipfile.ZIP_STORED):
    """Write {member name: bytes} as a zip (member names without .npy get it added)."""
    with zipfile.ZipFile(out, "w", compression=compress) as archive:
        for name, data in members.items():
            archive.writestr(name if "." in name else name + ".npy", data)
    return out


def _npy_members(path, **changes):
    members = {name: _npy_bytes(array) for name, array in _members(path).items()}
    members.update(changes)
    return members


def _with_header(path, out, **changes):
    header = _header(path)
    header.update(changes)
    encoded = np.frombuffer(json.dumps(header).encode(), np.uint8)
    return _zip(out, _npy_members(path, header=_npy_bytes(encoded)))


def _patch_zip_field(data, signature, offset, value, size):
    """Overwrite a little-endian field at `offset` in every zip record with `signature`
    (b"PK\\x03\\x04" local headers, b"PK\\x01\\x02" central directory entries)."""
    data = bytearray(data)
    at = data.find(signature)
    while at >= 0:
        data[at + offset:at + offset + size] = value.to_bytes(size, "little")
        at = data.find(signature, at + 4)
    return bytes(data)


def _refused(path, **kwargs):
    with pytest.raises(ValueError, match="not a valid fusedmlp model file") as caught:
        fusedmlp.load(path, **kwargs)
    return caught.value


def _deflated_zeros_member(archive, name, n_bytes):
    """Add a deflated member of n_bytes zero bytes without holding them in memory."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    chunk = bytes(1 << 20)
    with archive.open(info, "w", force_zip64=True) as member:
        for _ in range(n_bytes // len(chunk)):
            member.write(chunk)


def test_a_hidden_deflated_member_is_refused_without_inflating_it(saved, tmp_path):
    import tracemalloc
    path = tmp_path / "bomb.npz"
    _zip(path, _npy_members(saved))
    with zipfile.ZipFile(path, "a") as archive:
        _deflated_zeros_member(archive, "junk.npy", 256 << 20)    # 256 MiB of zeros
    assert path.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        error = _refused(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "junk.npy" in str(error)
    assert peak < 8 << 20, peak                  # nothing near the member's size was inflated


def test_a_member_declaring_more_than_the_header_says_is_refused_before_inflating(saved, tmp_path):
    import tracemalloc
    path = tmp_path / "big-params.npz"
    members = _npy_members(saved)
    del members["params"]
    _zip(path, members)
    with zipfile.ZipFile(path, "a") as archive:
        _deflated_zeros_member(archive, "params.npy", 128 << 20)
    tracemalloc.start()
    try:
        error = _refused(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "params" in str(error) and peak < 8 << 20, (error, peak)


def test_only_the_needed_members_are_read(saved, tmp_path, monkeypatch):
    opened = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    fusedmlp.load(saved)
    assert sorted(opened) == ["header.npy", "params.npy"]
    opened.clear()
    fusedmlp.load(saved, with_optimizer=True)
    assert sorted(opened) == ["header.npy", "optimizer_hyper.npy", "optimizer_state_0.npy",
                              "optimizer_state_1.npy", "params.npy"]


def test_a_deflated_file_still_loads(saved, tmp_path):
    """np.savez_compressed writes the same members deflated: a valid file."""
    path = _zip(tmp_path / "deflated.npz", _npy_members(saved), zipfile.ZIP_DEFLATED)
    model, opt = fusedmlp.load(path, with_optimizer=True)
    oracle.assert_same_bits(model.get_params_vector(), _members(saved)["params"], why=oracle.COPY)
    assert isinstance(opt, fusedmlp.Adam)


def _assert_chained(error):
    assert error.__cause__ is not None, error


def test_deeply_nested_json_header(saved, tmp_path):
    deep = b"[" * 30_000 + b"]" * 30_000      # within the header size limit
    path = _zip(tmp_path / "deep.npz",
                _npy_members(saved, header=_npy_bytes(np.frombuffer(deep, np.uint8))))
    _assert_chained(_refused(path))
    # nested objects inside a valid-looking header too
    path = _with_header(saved, tmp_path / "deep2.npz", extra=json.loads("[" * 50 + "]" * 50))
    fusedmlp.load(path)                          # a moderately nested unknown field is fine
    nested = json.dumps(_header(saved))[:-1] + ', "x": ' + "[" * 30_000 + "]" * 30_000 + "}"
    path = _zip(tmp_path / "deep3.npz", _npy_members(
        saved, header=_npy_bytes(np.frombuffer(nested.encode(), np.uint8))))
    _assert_chained(_refused(path))


def test_unknown_compression_method(saved, tmp_path):
    data = _zip(tmp_path / "x.npz", _npy_members(saved)).read_bytes()
    # compression method: offset 8 in a local header, 10 in a central directory entry
    data = _patch_zip_field(data, b"PK\x03\x04", 8, 99, 2)
    data = _patch_zip_field(data, b"PK\x01\x02", 10, 99, 2)
    path = tmp_path / "method99.npz"
    path.write_bytes(data)
    error = _refused(path)
    assert "compression" in str(error)


def test_encrypted_flag(saved, tmp_path):
    data = _zip(tmp_path / "x.npz", _npy_members(saved)).read_bytes()
    # general purpose flags: offset 6 in a local header, 8 in a central directory entry
    data = _patch_zip_field(data, b"PK\x03\x04", 6, 1, 2)
    data = _patch_zip_field(data, b"PK\x01\x02", 8, 1, 2)
    path = tmp_path / "encrypted.npz"
    path.write_bytes(data)
    assert "encrypted" in str(_refused(path))


@pytest.mark.parametrize("npy_header", [
    b"{'descr': '<u1', 'fortran_order': False, 'shape': (3,), ",          # unterminated
    b"{'descr': '<u1', 'fortran_order': False, 'shape': (3,)}) (((",       # trailing garbage
    b"{'descr': '<u1', 'fortran_order': False, 'shape': (3, 'x')}",        # a string extent
    b"\"\"\"",                                                              # tokenizer error
    b"{'descr': '<u1', 'fortran_order': False, 'shape': (-3,)}",           # negative extent
    b"{'descr': 'O', 'fortran_order': False, 'shape': (3,)}",              # object dtype
], ids=["unterminated", "garbage", "string-extent", "token-error", "negative", "object"])
def test_malformed_npy_header(saved, tmp_path, npy_header):
    text = npy_header + b" " * (63 - len(npy_header) % 64) + b"\n"
    member = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + b"abc"
    path = _zip(tmp_path / "bad-npy.npz", _npy_members(saved, header=member))
    _refused(path)


@pytest.mark.parametrize("version", [True, 1.0, "1", None, [1]])
def test_version_must_be_the_integer_1(saved, tmp_path, version):
    _refused(_with_header(saved, tmp_path / "v.npz", version=version))


def test_parameter_count_messages_name_the_wrong_field(saved, tmp_path):
    header = _header(saved)
    error = _refused(_with_header(saved, tmp_path / "n.npz",
                                  n_parameters=header["n_parameters"] + 1))
    assert "n_parameters" in str(error)
    params = _members(saved)["params"]
    path = _zip(tmp_path / "short.npz", _npy_members(saved, params=_npy_bytes(params[:-1])))
    error = _refused(path)
    assert "params" in str(error) and "n_parameters" not in str(error)


def test_nan_and_infinity_literals_in_the_header_are_refused(saved, tmp_path):
    text = json.dumps(_header(saved)).replace('"version": 1', '"version": NaN')
    path = _zip(tmp_path / "nan.npz", _npy_members(
        saved, header=_npy_bytes(np.frombuffer(text.encode(), np.uint8))))
    _refused(path)


def test_an_unreadable_file_is_an_os_error(tmp_path):
    with pytest.raises(IsADirectoryError):
        fusedmlp.load(tmp_path)


def test_load_from_a_file_object(saved):
    with open(saved, "rb") as f:
        model = fusedmlp.load(f)
    oracle.assert_same_bits(model.get_params_vector(), _members(saved)["params"], why=oracle.COPY)
    model, opt = fusedmlp.load(io.BytesIO(saved.read_bytes()), with_optimizer=True)
    assert isinstance(opt, fusedmlp.Adam)


# ------------------------------------------------------------------ issue 14: optimiser record
def _hyper_of(path):
    return _members(path)["optimizer_hyper"].copy()


def _with_optimizer_record(path, out, name="keep", hyper=None, states=None):
    members = _npy_members(path)
    if hyper is not None:
        members["optimizer_hyper"] = _npy_bytes(np.asarray(hyper, np.float64))
    if states is not None:
        for key in [k for k in members if k.startswith("optimizer_state_")]:
            del members[key]
        members.update({f"optimizer_state_{i}": _npy_bytes(s) for i, s in enumerate(states)})
    header = _header(path)
    if name != "keep":
        header["optimizer"] = name
    members["header"] = _npy_bytes(np.frombuffer(json.dumps(header).encode(), np.uint8))
    return _zip(out, members)


# hyper-parameter slots: lr 0, weight_decay 1, momentum/beta1 2, nesterov/beta2 3, eps 4,
# clip_norm 5, step count 6, l1 7 (an unused slot: tests/test_l1.py, SGD's eps slot)
@pytest.mark.parametrize("slot, value, field", [
    (0, -0.1, "lr"), (0, 0.0, "lr"), (1, -1.0, "weight_decay"), (2, 7.0, "beta1"),
    (2, 1.0, "beta1"), (3, -0.5, "beta2"), (4, 0.0, "eps"), (5, -2.0, "clip_norm"),
    (6, -1.0, "step"), (6, 1e300, "step"), (6, 2.5, "step"), (7, -3.0, "l1"),
    (0, np.inf, "lr"),
])
def test_adam_hyper_parameters_out_of_range_are_refused(saved, tmp_path, slot, value, field):
    hyper = _hyper_of(saved)
    hyper[slot] = value
    error = _refused(_with_optimizer_record(saved, tmp_path / "h.npz", hyper=hyper),
                     with_optimizer=True)
    assert field in str(error), error
    _assert_chained(error)


@pytest.mark.parametrize("make, field, value", [
    (lambda v: fusedmlp.Adam(lr=v), "lr", -0.1),
    (lambda v: fusedmlp.Adam(beta1=v), "beta1", 7.0),
    (lambda v: fusedmlp.Adam(eps=v), "eps", 0.0),
    (lambda v: fusedmlp.SGD(momentum=v), "momentum", 1.5),
    (lambda v: fusedmlp.RMSProp(alpha=v), "alpha", -0.1),
    (lambda v: fusedmlp.AdaGrad(weight_decay=v), "weight_decay", -1.0),
])
def test_the_constructor_and_the_file_refuse_with_the_same_message(tmp_path, make, field, value):
    with pytest.raises(ValueError) as constructed:
        make(value)
    model = fusedmlp.MLP([3, 2], seed=0)
    good = make({"lr": 0.01, "beta1": 0.9, "eps": 1e-8, "momentum": 0.5, "alpha": 0.9,
                 "weight_decay": 0.1}[field])
    path = tmp_path / "m.npz"
    model.save(path, optimizer=good)
    slot = {"lr": 0, "weight_decay": 1, "beta1": 2, "momentum": 2, "eps": 4, "alpha": 3}[field]
    hyper = _hyper_of(path)
    hyper[slot] = value
    error = _refused(_with_optimizer_record(path, tmp_path / "bad.npz", hyper=hyper),
                     with_optimizer=True)
    assert str(constructed.value) in str(error), (constructed.value, error)


def test_an_sgd_header_over_adam_state_is_refused(saved, tmp_path):
    error = _refused(_with_optimizer_record(saved, tmp_path / "sgd.npz", name="SGD"),
                     with_optimizer=True)
    assert "SGD" in str(error)
    # even with Adam's second state removed: beta2 = 0.999 is not a nesterov flag
    states = [_members(saved)["optimizer_state_0"]]
    _refused(_with_optimizer_record(saved, tmp_path / "sgd1.npz", name="SGD", states=states),
             with_optimizer=True)


def test_state_count_must_match_the_class(saved, tmp_path):
    state = _members(saved)["optimizer_state_0"]
    _refused(_with_optimizer_record(saved, tmp_path / "three.npz", states=[state] * 3),
             with_optimizer=True)
    _refused(_with_optimizer_record(saved, tmp_path / "one.npz", states=[state]),
             with_optimizer=True)


@pytest.mark.parametrize("name", ["Optimizer", "ConstantLR", "__class__", "adam", 3, None])
def test_the_optimizer_name_comes_from_a_closed_list(saved, tmp_path, name):
    path = _with_optimizer_record(saved, tmp_path / "n.npz", name=name)
    if name is None:         # "no optimizer", but optimizer members are present: inconsistent
        _refused(path, with_optimizer=True)
        return
    error = _refused(path, with_optimizer=True)
    assert "optimizer" in str(error)


def test_sgd_record_with_nesterov_but_no_momentum_is_refused(tmp_path):
    model = fusedmlp.MLP([3, 2], seed=0)
    path = tmp_path / "m.npz"
    model.save(path, optimizer=fusedmlp.SGD(0.1, momentum=0.9, nesterov=True))
    hyper = _hyper_of(path)
    hyper[2] = 0.0
    _refused(_with_optimizer_record(path, tmp_path / "bad.npz", hyper=hyper), with_optimizer=True)
    hyper[2], hyper[3] = 0.9, 0.5                # nesterov is a flag: 0 or 1
    _refused(_with_optimizer_record(path, tmp_path / "bad2.npz", hyper=hyper),
             with_optimizer=True)


def test_load_state_dict_validates_too():
    model = fusedmlp.MLP([3, 2], seed=0)
    opt = fusedmlp.Adam(0.01)
    state = opt.state_dict() | {"state_0": np.zeros(8, np.float32),
                                "state_1": np.zeros(8, np.float32)}
    state["hyper"] = state["hyper"].copy()
    state["hyper"][2] = 7.0
    with pytest.raises(ValueError, match="beta1"):
        fusedmlp.Adam().load_state_dict(model, state)
    with pytest.raises(ValueError, match="SGD"):
        fusedmlp.SGD().load_state_dict(model, opt.state_dict())


def test_a_corrupt_member_is_refused_when_it_is_read(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as archive:
        info = archive.getinfo("optimizer_state_1.npy")
    middle = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    data[middle] ^= 0xFF
    path = tmp_path / "corrupt-state.npz"
    path.write_bytes(bytes(data))
    error = _refused(path, with_optimizer=True)
    assert "CRC" in str(error) and "optimizer_state_1" in str(error)
    fusedmlp.load(path)                          # not needed without the optimiser: not read


# --------------------------------------------------------------------------- issue 14: save
def _small_model(seed=0):
    return fusedmlp.MLP([3, 4, 2], seed=seed)


@pytest.fixture
def umask():
    """Set the process's umask for one test (restored after)."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_gets_the_mode_the_umask_gives(tmp_path, umask, mask, mode):
    umask(mask)
    _small_model().save(tmp_path / "m.npz")
    assert stat_mode(tmp_path / "m.npz") == mode


def stat_mode(path):
    import stat
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o444])
def test_a_replaced_file_keeps_its_mode(tmp_path, umask, mode):
    umask(0o077)
    path = tmp_path / "m.npz"
    _small_model().save(path)
    os.chmod(path, mode)
    _small_model(seed=1).save(path)
    assert stat_mode(path) == mode
    oracle.assert_same_bits(fusedmlp.load(path).get_params_vector(),
                            _small_model(seed=1).get_params_vector(), why=oracle.SAME_CALL)


def test_a_symlink_is_followed_and_kept(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    _small_model(0).save(runs / "run42.npz")
    link = tmp_path / "latest.npz"
    link.symlink_to(os.path.join("runs", "run42.npz"))       # a relative link
    second = tmp_path / "second.npz"
    second.symlink_to(link)                                   # a link to the link
    new = _small_model(1)
    new.save(second)
    assert second.is_symlink() and link.is_symlink()
    assert os.readlink(link) == os.path.join("runs", "run42.npz")
    oracle.assert_same_bits(fusedmlp.load(runs / "run42.npz").get_params_vector(),
                            new.get_params_vector(), why=oracle.COPY)
    assert sorted(os.listdir(runs)) == ["run42.npz"]          # the temporary was in runs/
    dangling = tmp_path / "next.npz"
    dangling.symlink_to("runs/run43.npz")                     # a link to a file not yet there
    new.save(dangling)
    assert dangling.is_symlink() and (runs / "run43.npz").is_file()


def test_the_directory_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    import stat
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        return real_fsync(fd)

    def replace(src, dst, **kwargs):
        events.append("rename")
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    _small_model().save(tmp_path / "m.npz")
    assert events == ["fsync-file", "rename", "fsync-dir"], events


@pytest.mark.parametrize("stage", ["write", "fchmod", "rename", "link"])
def test_no_temporary_file_survives_a_failure(tmp_path, monkeypatch, stage):
    path = tmp_path / "m.npz"
    _small_model(0).save(path)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(f"injected failure at {stage}")

    target = {"write": (model_io.np, "savez"), "fchmod": (os, "fchmod"),
              "rename": (os, "replace"), "link": (model_io, "_link_unnamed")}[stage]
    monkeypatch.setattr(*target, fail if stage != "link" else lambda fd, path: False)
    if stage == "link":   # the unnamed file cannot be named: a named one is written instead
        _small_model(1).save(path)
    else:
        with pytest.raises(OSError, match="injected"):
            _small_model(1).save(path)
        assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]


_KILLED_SAVE = r"""
import os, signal, sys
import numpy as np
import fusedmlp
from fusedmlp import io as model_io
if sys.argv[2] == "named":
    model_io._open_unnamed = lambda directory: None            # as where O_TMPFILE is missing
real = {"savez": np.savez, "replace": os.replace}
def killed(*args, **kwargs):
    if sys.argv[3] == "savez":
        args[0].write(b"PK\x03\x04 a part of an archive" * 1000)
        args[0].flush()
    os.kill(os.getpid(), signal.SIGKILL)
setattr(np if sys.argv[3] == "savez" else os, sys.argv[3], killed)
fusedmlp.MLP([3, 4, 2], seed=0).save(sys.argv[1])
"""


@pytest.mark.parametrize("how, when", [("unnamed", "savez"), ("unnamed", "replace"),
                                       ("named", "savez"), ("named", "replace")])
def test_a_killed_save_leaves_nothing_a_later_save_does_not_remove(tmp_path, how, when):
    import subprocess
    import sys
    path = tmp_path / "m.npz"
    _small_model(1).save(path)
    before = path.read_bytes()
    for _ in range(3):
        run = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(path), how, when],
                             capture_output=True)
        assert run.returncode == -9, run.stderr.decode()
    assert path.read_bytes() == before           # the target is untouched
    left = sorted(os.listdir(tmp_path))
    if how == "unnamed" and when == "savez":
        assert left == ["m.npz"]                 # an unnamed file vanishes with the process
    else:
        # each killed save removed the one before it left: one temporary, recognisable
        assert len(left) == 2 and left[0].startswith(".m.npz.fusedmlp-") \
            and left[0].endswith(".tmp"), left
    _small_model(2).save(tmp_path / "other.npz")  # a save to another path leaves them alone
    assert len(os.listdir(tmp_path)) == len(left) + 1
    _small_model(2).save(path)                    # the next save to the path removes them
    assert sorted(os.listdir(tmp_path)) == ["m.npz", "other.npz"]


def test_a_temporary_of_a_running_process_is_kept(tmp_path):
    import subprocess
    import sys
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = tmp_path / f".m.npz.fusedmlp-{sleeper.pid}-abc.tmp"
        busy.write_bytes(b"a save in progress")
        _small_model().save(tmp_path / "m.npz")
        assert busy.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    _small_model().save(tmp_path / "m.npz")
    assert not busy.exists()


class _PathLike:
    def __init__(self, path):
        self.path = path

    def __fspath__(self):
        return self.path


@pytest.mark.parametrize("kind", ["str", "bytes", "pathlike-str", "pathlike-bytes", "pathlib"])
def test_save_and_load_take_str_bytes_and_pathlike(tmp_path, kind):
    where = str(tmp_path / "m.npz")
    path = {"str": where, "bytes": os.fsencode(where), "pathlike-str": _PathLike(where),
            "pathlike-bytes": _PathLike(os.fsencode(where)), "pathlib": tmp_path / "m.npz"}[kind]
    model = _small_model()
    opt = fusedmlp.Adam(0.01)
    model.save(path, optimizer=opt)
    loaded, loaded_opt = fusedmlp.load(path, with_optimizer=True)
    oracle.assert_same_bits(loaded.get_params_vector(), model.get_params_vector(), why=oracle.COPY)
    assert isinstance(loaded_opt, fusedmlp.Adam)
    model.save(path)                             # and replacing through the same kind of path
    assert os.listdir(tmp_path) == ["m.npz"]


# --------------------------------------------------------------- issue 14: model + optimiser
@pytest.mark.parametrize("make", [lambda: fusedmlp.SGD(0.05, momentum=0.9),
                                  lambda: fusedmlp.Adam(0.01), lambda: fusedmlp.AdaGrad(0.05)],
                         ids=["sgd", "adam", "adagrad"])
@pytest.mark.parametrize("copy_with", ["pickle", "deepcopy"])
def test_a_model_and_its_optimizer_copy_as_a_pair(make, copy_with):
    import copy
    opt = make()
    model, X, y = _trained(np.float64, optimizer=opt)
    if copy_with == "pickle":
        model2, opt2 = pickle.loads(pickle.dumps((model, opt)))
    else:
        model2, opt2 = copy.deepcopy((model, opt))
    assert opt2 is not opt and model2 is not model
    assert opt2._model() is model2               # bound to the copy, not to the original
    assert opt2.steps == opt.steps > 0 and repr(opt2) == repr(opt)
    for _ in range(3):            # and both continue identically (the same calls: SAME_CALL)
        assert model2.train_step(X[:16], y[:16], opt2) == model.train_step(X[:16], y[:16], opt)
    oracle.assert_same_bits(model2.get_params_vector(), model.get_params_vector(),
                            why=oracle.SAME_CALL)
    with pytest.raises(ValueError, match="already in use with another model"):
        model.train_step(X[:16], y[:16], opt2)   # the copy's optimiser is the copy's


def test_a_copied_pair_saves_with_its_optimizer(tmp_path):
    import copy
    opt = fusedmlp.Adam(0.01)
    model, X, y = _trained(np.float32, optimizer=opt)
    model2, opt2 = copy.deepcopy((model, opt))
    model2.save(tmp_path / "m.npz", optimizer=opt2)
    loaded, loaded_opt = fusedmlp.load(tmp_path / "m.npz", with_optimizer=True)
    assert loaded.train_step(X[:16], y[:16], loaded_opt) == model.train_step(X[:16], y[:16], opt)


def test_an_unbound_optimizer_pickles_and_copies():
    import copy
    opt = fusedmlp.SGD(0.1, momentum=0.5)
    for clone in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert repr(clone) == repr(opt) and clone._model is None


# --------------------------------------------------------------------------- issue 14: fuzz
def test_fuzz_load_short_run():
    """A short run of the load fuzzer (tests/fuzz_load.py; longer runs: see its docstring)."""
    import fuzz_load
    fuzz_load.hypothesis_test(max_examples=150)()
