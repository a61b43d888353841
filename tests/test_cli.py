"""The command line (``python -m fusedmlp``, the ``fusedmlp`` script) and the demo's data:
the IDX reader on files written here byte by byte, the digits loader, the demo's output and
its refusals."""

import gzip
import os
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from fusedmlp.cli import main
from fusedmlp.cli.datasets import load_digits_dataset, load_idx_dataset, read_idx

import oracle


# --------------------------------------------------------------------------- IDX files
def _idx_bytes(array, type_code, big_endian_format):
    """An IDX file's bytes, written from the format's definition (not with fusedmlp)."""
    array = np.asarray(array)
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(big_endian_format).tobytes()


def _write(path, content, compress=False):
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("type_code, fmt, values", [
    (0x08, ">u1", np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10),
    (0x09, ">i1", np.array([-128, -1, 0, 127], dtype=np.int8)),
    (0x0B, ">i2", np.array([[-30000, 2], [3, 30000]], dtype=np.int16)),
    (0x0C, ">i4", np.array([-(2 ** 31), 1, 2 ** 31 - 1], dtype=np.int32)),
    (0x0D, ">f4", np.array([[1.5, -2.25e-3], [np.pi, 1e30]], dtype=np.float32)),
    (0x0E, ">f8", np.array([np.e, -1e-300], dtype=np.float64)),
])
def test_read_idx_round_trips_every_type(tmp_path, compress, type_code, fmt, values):
    path = _write(tmp_path / "data-idx", _idx_bytes(values, type_code, fmt), compress)
    array = read_idx(path)
    assert array.shape == values.shape
    assert array.dtype == values.dtype and array.dtype.isnative
    oracle.assert_same_bits(array, values, why=oracle.COPY)     # bytes read back


@pytest.mark.parametrize("content, match", [
    (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x05", "not an IDX file"),
    (b"\x00", "not an IDX file"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x05", "unknown IDX type byte 0x07"),
    (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated IDX header"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 4) + b"\x01\x02", "truncated"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x01\x02", "extra bytes"),
    (b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),
])
def test_read_idx_refuses_broken_files(tmp_path, content, match):
    path = _write(tmp_path / "broken", content)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def _idx_directory(directory, n_train=60, n_test=20, compress=True, seed=0):
    """A tiny MNIST-style directory: 6x6 images whose class is where a bright bar is."""
    rng = np.random.default_rng(seed)
    directory.mkdir(exist_ok=True)
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 3
        images = rng.integers(0, 60, size=(n, 6, 6)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label:2 * label + 2, :] = 255
        _write(directory / f"{split}-images-idx3-ubyte{suffix}",
               _idx_bytes(images, 0x08, ">u1"), compress)
        _write(directory / f"{split}-labels-idx1-ubyte{suffix}",
               _idx_bytes(labels.astype(np.uint8), 0x08, ">u1"), compress)
    return directory


@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_dataset(tmp_path, compress):
    data = load_idx_dataset(_idx_directory(tmp_path / "fashion-like", compress=compress))
    assert data.X_train.shape == (60, 36) and data.X_test.shape == (20, 36)
    assert data.X_train.dtype == np.float32
    assert data.X_train.min() >= 0 and data.X_train.max() == 1.0
    np.testing.assert_array_equal(data.y_train, np.arange(60) % 3)
    assert data.y_train.dtype == np.int64 and data.n_classes == 3
    # pixel 0 of image 0 comes back as its byte / 255
    raw = read_idx(next((tmp_path / "fashion-like").glob("train-images*")))
    # one division rounded to float32
    oracle.assert_within(data.X_train[0], raw[0].reshape(-1) / 255.0,
                         oracle.rounding_tolerance(np.float32, 1) * raw[0].reshape(-1) / 255.0)


def test_load_idx_dataset_refusals(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_idx_dataset(tmp_path / "missing")
    directory = _idx_directory(tmp_path / "incomplete")
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="test labels"):
        load_idx_dataset(directory)
    _write(directory / "t10k-labels-idx1-ubyte", _idx_bytes(np.zeros(7, np.uint8), 0x08, ">u1"))
    with pytest.raises(ValueError, match="20 test images but 7 test labels"):
        load_idx_dataset(directory)


def test_reads_the_installed_fashion_mnist():
    from fusedmlp.cli.datasets import DEFAULT_FASHION_MNIST_DIR, FASHION_MNIST_CLASSES

    if not os.path.isdir(DEFAULT_FASHION_MNIST_DIR):
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    data = load_idx_dataset(DEFAULT_FASHION_MNIST_DIR)
    assert data.name == "Fashion-MNIST" and data.class_names == FASHION_MNIST_CLASSES
    assert data.X_train.shape == (60000, 784) and data.X_test.shape == (10000, 784)
    assert np.array_equal(np.bincount(data.y_test), np.full(10, 1000))


def test_digits_dataset_split():
    pytest.importorskip("sklearn")
    data = load_digits_dataset(seed=0)
    assert data.X_train.shape == (1347, 64) and data.X_test.shape == (450, 64)
    assert data.X_train.dtype == np.float32 and data.X_train.max() == 1.0
    # stratified: every class has about a quarter of its samples in the test set
    counts = np.bincount(data.y_test, minlength=10) / (
        np.bincount(data.y_test, minlength=10) + np.bincount(data.y_train, minlength=10))
    assert np.all(np.abs(counts - 0.25) < 0.01)


# --------------------------------------------------------------------------- the demo
def _numbers(output):
    accuracy = float(re.search(r"^test accuracy: ([\d.]+)%", output, re.M).group(1))
    speedup = float(re.search(r"^speed-up over pure NumPy: ([\d.]+)x", output, re.M).group(1))
    return accuracy, speedup


def test_demo_on_digits_prints_progress_accuracy_and_speedup(capsys):
    pytest.importorskip("sklearn")
    status = main(["demo", "--epochs", "4", "--hidden", "64"])
    output = capsys.readouterr().out
    assert status == 0
    assert re.findall(r"^epoch +(\d)/4 ", output, re.M) == ["1", "2", "3", "4"]
    accuracy, speedup = _numbers(output)
    assert accuracy > 85                      # 4 epochs of Adam on digits
    assert speedup > 0
    assert "training time:" in output and "reference:" in output


def test_demo_on_idx_files(tmp_path, capsys):
    directory = _idx_directory(tmp_path / "bars", n_train=300, n_test=60)
    status = main(["demo", "--data", str(directory), "--epochs", "6", "--hidden", "16,8",
                   "--batch-size", "16", "--lr", "0.01", "--dtype", "float64"])
    output = capsys.readouterr().out
    assert status == 0
    assert "300 training and 60 test samples, 36 features, 3 classes" in output
    accuracy, _ = _numbers(output)
    assert accuracy > 90                      # the bars are easy to tell apart


def test_demo_bad_data_path_fails_clearly(tmp_path, capsys):
    missing = tmp_path / "no-such-dir"
    assert main(["demo", "--data", str(missing)]) == 1
    error = capsys.readouterr().err
    assert str(missing) in error and "not a directory" in error
    assert error.startswith("fusedmlp demo: error:")
    broken = tmp_path / "broken"
    broken.mkdir()
    assert main(["demo", "--data", str(broken)]) == 1
    assert "no train images file" in capsys.readouterr().err


def test_demo_without_scikit_learn_says_how_to_get_digits(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)     # import now fails
    assert main(["demo", "--epochs", "1"]) == 1
    error = capsys.readouterr().err
    assert "scikit-learn" in error and '".[sklearn]"' in error


def test_demo_plot(tmp_path, capsys):
    path = tmp_path / "curves.png"
    directory = _idx_directory(tmp_path / "bars")
    status = main(["demo", "--data", str(directory), "--epochs", "2", "--hidden", "8",
                   "--reference-epochs", "0", "--plot", str(path)])
    captured = capsys.readouterr()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert status == 1 and not path.exists()
        assert "matplotlib" in captured.err and '".[plot]"' in captured.err
        assert "epoch" not in captured.out            # refused before training
    else:
        assert status == 0
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "speed-up" not in captured.out         # --reference-epochs 0


def test_demo_plot_path_is_checked_before_training(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    directory = _idx_directory(tmp_path / "bars")
    for plot, problem in ((tmp_path / "missing" / "curves.png", "does not exist"),
                          (tmp_path, "is a directory")):
        status = main(["demo", "--data", str(directory), "--epochs", "1", "--hidden", "4",
                       "--reference-epochs", "0", "--plot", str(plot)])
        captured = capsys.readouterr()
        assert status == 1 and problem in captured.err
        assert captured.err.startswith("fusedmlp demo: error: --plot")
        assert "epoch" not in captured.out            # refused before training


def test_bench_plot_directory_is_checked_before_measuring(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("fusedmlp.cli.bench")
    not_a_directory = tmp_path / "file.txt"
    not_a_directory.write_text("")
    assert main(["bench", "--plot", str(not_a_directory)]) == 1
    captured = capsys.readouterr()
    assert "fusedmlp bench: error: --plot" in captured.err and "is a file" in captured.err
    assert "benchmark" not in captured.out            # nothing measured


def test_bench_plot_writes_the_figures(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("fusedmlp.cli.bench")
    figures = tmp_path / "figures"
    status = main(["bench", "--quick", "--rounds", "1", "--target-time", "0.001", "--threads",
                   "1", "--competitors", "fusedmlp", "--networks", "784-128-10",
                   "--plot", str(figures)])
    assert status == 0
    for name in ("step_time.png", "inference.png", "epoch_time.png"):
        assert (figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "figure written to" in capsys.readouterr().out


def test_help_texts_are_plain_and_name_one_program():
    texts = {}
    for command in ("demo", "bench", "export-c"):
        result = subprocess.run([sys.executable, "-m", "fusedmlp", command, "--help"],
                                capture_output=True, text=True, check=True)
        texts[command] = result.stdout
        assert result.stdout.startswith(f"usage: fusedmlp {command} ")
    for text in texts.values():
        assert "``" not in text and ":class:" not in text and ":func:" not in text


def test_bad_options_are_usage_errors(capsys):
    for argv in (["demo", "--epochs", "0"], ["demo", "--hidden", "10,x"], ["frobnicate"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "expected positive widths" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


# --------------------------------------------------------------------------- entry points
def test_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "fusedmlp", "--help"], capture_output=True,
                            text=True, check=True)
    assert "demo" in result.stdout and "bench" in result.stdout and "export-c" in result.stdout
    demo_help = subprocess.run([sys.executable, "-m", "fusedmlp", "demo", "--help"],
                               capture_output=True, text=True, check=True)
    assert "--data" in demo_help.stdout and "--plot" in demo_help.stdout


def test_bench_is_dispatched_to_its_own_parser(capsys):
    pytest.importorskip("fusedmlp.cli.bench")
    with pytest.raises(SystemExit) as info:
        main(["bench", "--help"])
    assert info.value.code == 0
    assert "bench" in capsys.readouterr().out


def test_console_script():
    script = shutil.which("fusedmlp")
    if script is None:
        pytest.skip("the fusedmlp console script is not on PATH")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=True)
    assert "demo" in result.stdout


def test_bench_runs_prints_both_tables_on_small_data():
    # a smoke run of 'bench runs' (real timings need the full data): fusedmlp and NumPy
    # workers, one timed epoch of 1,024 synthetic rows, a short long run
    result = subprocess.run(
        [sys.executable, "-m", "fusedmlp", "bench", "runs", "--competitors", "fusedmlp,numpy",
         "--rounds", "1", "--threads", "1", "--rows", "1024", "--long-steps", "20"],
        capture_output=True, text=True, timeout=300, cwd=os.path.dirname(__file__) or ".")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^\| fusedmlp \| 1 \| [\d.]+ \|", out, re.M), out
    assert re.search(r"^\| numpy \| 1 \| [\d.]+ \|", out, re.M), out
    assert out.count("| 784-128-10 b") == 4 and "Small epochs" in out
    assert "MISSED" not in out
