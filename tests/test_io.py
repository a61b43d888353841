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
    np.testing.assert_array_equal(loaded.get_params_vector(), model.get_params_vector())
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # a str path works as well as a pathlib.Path
    model.save(str(tmp_path / "again.npz"))
    np.testing.assert_array_equal(fusedmlp.load(str(tmp_path / "again.npz")).forward(X),
                                  model.forward(X))


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
    np.testing.assert_array_equal(loaded.get_params_vector(), model.get_params_vector())


def test_load_with_optimizer_when_the_file_has_none(tmp_path):
    model, X, _ = _trained(np.float32)
    model.save(tmp_path / "m.npz")
    loaded, opt = fusedmlp.load(tmp_path / "m.npz", with_optimizer=True)
    assert opt is None
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))
    assert _header(tmp_path / "m.npz")["optimizer"] is None


def test_save_is_atomic(tmp_path, monkeypatch):
    old, X, _ = _trained(np.float32, seed=0)
    new, _, _ = _trained(np.float32, seed=1)
    path = tmp_path / "model.npz"
    old.save(path)
    old_bytes = path.read_bytes()
    new.save(path)                               # replaced, and no temporary file left over
    assert os.listdir(tmp_path) == ["model.npz"]
    np.testing.assert_array_equal(fusedmlp.load(path).forward(X), new.forward(X))
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
    np.testing.assert_array_equal(loaded.get_params_vector(), model.get_params_vector())
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
        "bad-output": dict(header_changes={"output": "sigmoid"}),
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
    np.testing.assert_array_equal(clone.get_params_vector(), model.get_params_vector())
    np.testing.assert_array_equal(clone.forward(X), model.forward(X))
    # the clone's layers are views into its own buffer, not into the original's
    clone.layers[0].W[...] = 0
    assert model.layers[0].W.any()
    # and the random state came along: the same fit gives the same weights
    model.fit(X, y, epochs=2, batch_size=8)
    restored = pickle.loads(data)
    restored.fit(X, y, epochs=2, batch_size=8)
    np.testing.assert_array_equal(restored.get_params_vector(), model.get_params_vector())


def test_pickle_through_a_file_object():
    model, X, _ = _trained(np.float32)
    buffer = io.BytesIO()
    pickle.dump(model, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    buffer.seek(0)
    np.testing.assert_array_equal(pickle.load(buffer).predict_proba(X), model.predict_proba(X))
