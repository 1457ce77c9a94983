"""Tasks: models (parameter counts, determinism), text pipeline, dataset loaders on every layout."""

from __future__ import annotations

import csv
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from clients.tasks import TASKS, Task, count_parameters, get_task
from clients.tasks import datasets as ds
from clients.tasks.datasets import DatasetError, DatasetFormatError, DatasetNotFoundError, read_idx
from clients.tasks.models import FastMaxPool2d, MnistCNN, TextRNN, cifar_resnet18
from clients.tasks.text import PAD_INDEX, UNK_INDEX, Vocabulary, encode_texts, normalize_text, tokenize

# ============================================================================ models


def test_registry_names_and_classes() -> None:
    assert set(TASKS) == {"digits", "mnist-mini", "mnist", "fmnist", "cifar10", "agnews"}
    assert {n: t.num_classes for n, t in TASKS.items()} == {
        "digits": 10, "mnist-mini": 10, "mnist": 10, "fmnist": 10, "cifar10": 10, "agnews": 4,
    }
    assert all(isinstance(t, Task) and t.name == n for n, t in TASKS.items())
    with pytest.raises(ValueError, match="Unknown task 'svhn'"):
        get_task("svhn")


def test_mnist_cnn_has_51710_parameters_layer_by_layer() -> None:
    model = MnistCNN()
    per_layer = {name: sum(p.numel() for p in mod.parameters()) for name, mod in model.named_children()}
    assert per_layer == {
        "conv1": 208, "conv2": 1168, "conv3": 4640, "fc1": 34680, "fc2": 10164, "fc3": 850,
        "pool": 0, "dropout": 0,
    }
    assert count_parameters(model) == 51_710
    # Registration order = flat-vector order used by SignGuard's window (reference §3.1 offsets).
    assert [n for n, _ in model.named_parameters()][::2] == ["conv1.weight", "conv2.weight", "conv3.weight",
                                                           "fc1.weight", "fc2.weight", "fc3.weight"]
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert get_task("mnist").build_model().__class__ is MnistCNN
    assert get_task("fmnist").build_model().__class__ is MnistCNN


def test_cifar_resnet18_matches_reference_count_and_shape() -> None:
    model = cifar_resnet18()
    assert count_parameters(model) == 11_173_962
    stem = model.conv1
    assert (stem.kernel_size, stem.stride, stem.padding, stem.bias) == ((3, 3), (1, 1), (1, 1), None)
    assert isinstance(model.maxpool, nn.Identity)
    assert sum(p.numel() for p in model.layer4.parameters()) == 8_393_728
    assert model.fc.in_features == 512 and model.fc.out_features == 10
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_textrnn_count_and_padding_invariance() -> None:
    model = get_task("agnews").build_model()
    assert isinstance(model, TextRNN)
    assert count_parameters(model) == 806_404  # documented in docs/tasks.md
    assert model.embedding.num_embeddings == ds.AGNEWS_VOCAB_SIZE
    lstm = model.lstm
    assert (lstm.num_layers, lstm.bidirectional, lstm.hidden_size, lstm.input_size) == (2, True, 64, 64)
    model.eval()
    tokens = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
    longer = torch.cat([tokens, torch.zeros(2, 7, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model(tokens), model(longer), atol=1e-6)
        assert model(tokens).shape == (2, 4)


@pytest.mark.parametrize("name", ["digits", "mnist", "agnews"])
def test_build_model_deterministic_given_seed(name: str) -> None:
    task = get_task(name)
    torch.manual_seed(3)
    a = task.build_model().state_dict()
    torch.manual_seed(3)
    b = task.build_model().state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# ============================================================================ text pipeline


def test_normalize_and_tokenize_agnews_escapes() -> None:
    raw = r"Kerry #39;s &lt;b&gt;plan&lt;/b&gt; quot;nuts, quot; costs  #36;1.5M\The END"
    assert normalize_text(raw) == "kerry 's  plan  \"nuts, \" costs  $1.5m the end"
    assert tokenize(raw) == ["kerry", "s", "plan", "nuts", "costs", "1", "5m", "the", "end"]
    assert tokenize("Don't STOP") == ["don't", "stop"]


def test_vocabulary_ranking_limits_and_specials() -> None:
    docs = [["b", "a", "c"], ["a", "b", "d"], ["a", "e"]]
    vocab = Vocabulary.build(docs, min_freq=1)
    assert vocab.itos[:2] == ["<pad>", "<unk>"] and vocab.stoi["<pad>"] == PAD_INDEX
    assert vocab.itos[2:] == ["a", "b", "c", "d", "e"]  # frequency, then alphabetical
    assert Vocabulary.build(docs, min_freq=2).itos[2:] == ["a", "b"]
    assert len(Vocabulary.build(docs, min_freq=1, max_size=4)) == 4
    assert vocab.lookup(["a", "zzz"]) == [2, UNK_INDEX]


def test_encode_pads_truncates_and_never_empty() -> None:
    vocab = Vocabulary(["x", "y"])
    out = encode_texts([["x", "y", "x"], [], ["y", "q"]], vocab, max_len=2)
    assert out.dtype == torch.int64
    assert out.tolist() == [[2, 3], [UNK_INDEX, PAD_INDEX], [3, UNK_INDEX]]


# ============================================================================ generated files


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """IDX format: 0, 0, type 0x08 (uint8), ndim, big-endian dims, data (magic 2051 / 2049)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def tiny_images(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def write_idx_set(folder: Path, compress: bool, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    xtr, ytr = tiny_images(n_train, (28, 28), 0)
    xte, yte = tiny_images(n_test, (28, 28), 1)
    for stem, arr in [("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                      ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)]:
        write_idx(folder / stem, arr, compress)
    return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}


def check_gray(train, test, arrays: dict[str, np.ndarray]) -> None:
    assert train.data.shape == (len(arrays["y_train"]), 1, 28, 28) and train.data.dtype == torch.uint8
    assert test.data.shape == (len(arrays["y_test"]), 1, 28, 28)
    assert np.array_equal(train.data[:, 0].numpy(), arrays["x_train"])
    assert train.targets.dtype == np.int64 and train.targets.ndim == 1
    assert np.array_equal(train.targets, arrays["y_train"]) and np.array_equal(test.targets, arrays["y_test"])


@pytest.fixture
def no_debian_fmnist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide the system Fashion-MNIST so 'not found' tests do not pick it up."""
    monkeypatch.setattr(ds, "DEBIAN_FMNIST_DIR", tmp_path / "no-debian-fmnist")


def test_read_idx_magic_numbers(tmp_path: Path) -> None:
    x, y = tiny_images(3, (28, 28), 0)
    write_idx(tmp_path / "img", x, compress=True)
    write_idx(tmp_path / "lbl", y, compress=False)
    raw = gzip.decompress((tmp_path / "img.gz").read_bytes())
    assert struct.unpack(">I", raw[:4])[0] == 2051
    assert struct.unpack(">I", (tmp_path / "lbl").read_bytes()[:4])[0] == 2049
    assert np.array_equal(read_idx(tmp_path / "img.gz"), x)
    assert np.array_equal(read_idx(tmp_path / "lbl"), y)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x01\x02\x08\x01\x00\x00\x00\x01\x00", "magic"),
        (bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3, "announces shape"),
        (bytes([0, 0, 8, 3]) + b"\x00", "truncated"),
    ],
)
def test_read_idx_rejects_malformed(tmp_path: Path, payload: bytes, match: str) -> None:
    (tmp_path / "f").write_bytes(payload)
    with pytest.raises(DatasetFormatError, match=match):
        read_idx(tmp_path / "f")


def test_read_idx_rejects_corrupt_gzip(tmp_path: Path) -> None:
    (tmp_path / "f.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetFormatError, match="Cannot read"):
        read_idx(tmp_path / "f.gz")


@pytest.mark.parametrize(
    ("loader", "subdir", "compress"),
    [
        ("mnist", "", True),
        ("mnist", "mnist", False),
        ("mnist", "MNIST/raw", True),
        ("fmnist", "", True),
        ("fmnist", "fashion-mnist", False),
        ("fmnist", "FashionMNIST/raw", True),
    ],
)
def test_gray_loaders_on_idx_layouts(
    tmp_path: Path, loader: str, subdir: str, compress: bool, no_debian_fmnist: None
) -> None:
    arrays = write_idx_set(tmp_path / subdir if subdir else tmp_path, compress)
    train, test = get_task(loader).load(tmp_path)
    check_gray(train, test, arrays)


@pytest.mark.parametrize(
    ("loader", "filename", "layout"),
    [("mnist", "mnist.npz", "NHW"), ("fmnist", "fmnist.npz", "NHWC"), ("fmnist", "fashion-mnist.npz", "NCHW")],
)
def test_gray_loaders_on_npz(tmp_path: Path, loader: str, filename: str, layout: str, no_debian_fmnist: None) -> None:
    xtr, ytr = tiny_images(9, (28, 28), 2)
    xte, yte = tiny_images(4, (28, 28), 3)
    shaped = {"NHW": lambda a: a, "NHWC": lambda a: a[..., None], "NCHW": lambda a: a[:, None]}[layout]
    np.savez_compressed(tmp_path / filename, x_train=shaped(xtr), y_train=ytr, x_test=shaped(xte), y_test=yte)
    train, test = get_task(loader).load(tmp_path)
    check_gray(train, test, {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte})


def test_gray_transform_is_paper_normalisation(tmp_path: Path) -> None:
    arrays = write_idx_set(tmp_path, compress=True)
    train, _ = get_task("mnist").load(tmp_path)
    x, y = train.get_batch([0, 3])
    expected = (torch.from_numpy(arrays["x_train"][[0, 3]]).float() / 255 - 0.1307) / 0.3081
    assert x.dtype == torch.float32 and x.shape == (2, 1, 28, 28)
    assert torch.allclose(x[:, 0], expected, atol=1e-5)
    assert y.dtype == torch.int64 and y.tolist() == arrays["y_train"][[0, 3]].tolist()
    single, label = train[3]
    assert torch.allclose(single, x[1]) and label == int(arrays["y_train"][3])


@pytest.mark.parametrize("layout", ["HWC", "CHW"])
def test_cifar_loader_on_npz(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(0)
    xtr = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    xte = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    conv = (lambda a: a) if layout == "HWC" else (lambda a: a.transpose(0, 3, 1, 2))
    np.savez(tmp_path / "cifar10.npz", x_train=conv(xtr), y_train=np.arange(6) % 10,
             x_test=conv(xte), y_test=np.array([9, 0, 1]))
    train, test = get_task("cifar10").load(tmp_path)
    assert train.data.shape == (6, 3, 32, 32) and train.data.dtype == torch.uint8
    assert np.array_equal(train.data.numpy(), xtr.transpose(0, 3, 1, 2))
    assert test.targets.tolist() == [9, 0, 1]
    # Test set: deterministic normalisation only; train set: random crop + flip per sample.
    assert test.augment is None and train.augment is not None
    x, _ = test.get_batch([0])
    mean = torch.tensor(ds.CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(ds.CIFAR10_STD).view(3, 1, 1)
    assert torch.allclose(x[0], (torch.from_numpy(xte[0].transpose(2, 0, 1)).float() / 255 - mean) / std, atol=1e-5)
    torch.manual_seed(0)
    augmented = [train.get_batch([0])[0] for _ in range(8)]
    assert augmented[0].shape == (1, 3, 32, 32)
    assert any(not torch.equal(augmented[0], a) for a in augmented[1:])


def write_agnews(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)


AG_TRAIN = [
    ("3", "Stocks rally, \"again\"", "Wall St. rallies on earnings\\Stocks rally"),
    ("2", "Team wins", "The team wins the cup"),
    ("1", "Summit ends", "Leaders end the summit, stocks rally"),
    ("4", "New chip", "A new chip from the lab"),
]
AG_TEST = [("2", "Cup final", "team wins again"), ("4", "Quantum", "zebra quokka")]


@pytest.mark.parametrize(
    ("subdir", "train_name", "test_name"),
    [("", "ag_news_train.csv", "ag_news_test.csv"), ("", "train.csv", "test.csv"),
     ("ag_news_csv", "train.csv", "test.csv")],
)
def test_agnews_loader_layouts(tmp_path: Path, subdir: str, train_name: str, test_name: str) -> None:
    folder = tmp_path / subdir
    folder.mkdir(exist_ok=True)
    write_agnews(folder / train_name, AG_TRAIN)
    write_agnews(folder / test_name, AG_TEST)
    train, test = get_task("agnews").load(tmp_path)
    assert train.targets.tolist() == [2, 1, 0, 3] and test.targets.tolist() == [1, 3]
    assert train.data.shape == (4, ds.AGNEWS_MAX_LEN) and train.data.dtype == torch.int64
    vocab = train.vocab
    assert vocab is test.vocab
    # min_freq 2 over the TRAINING text only: "stocks"/"rally"/"the"/"team"/"wins" qualify,
    # "again" (once in train) and "quokka" (test only) do not.
    assert {"stocks", "rally", "the", "team", "wins"} <= set(vocab.itos)
    assert "again" not in vocab.stoi and "quokka" not in vocab.stoi
    first = [vocab.itos[i] for i in train.data[0].tolist() if i != PAD_INDEX]
    assert first[:3] == ["stocks", "rally", "<unk>"]
    assert test.data[1, :4].tolist() == [UNK_INDEX, UNK_INDEX, UNK_INDEX, PAD_INDEX]


@pytest.mark.parametrize(
    ("rows", "match"),
    [([("5", "t", "d")], "class must be 1-4"), ([("1", "only two")], "expected 3 fields"), ([], "no rows")],
)
def test_agnews_malformed_csv(tmp_path: Path, rows, match: str) -> None:
    write_agnews(tmp_path / "train.csv", rows)
    write_agnews(tmp_path / "test.csv", AG_TEST)
    with pytest.raises(DatasetFormatError, match=match) as err:
        get_task("agnews").load(tmp_path)
    assert str(tmp_path) in str(err.value) and "Accepted layouts" in str(err.value)


def test_agnews_half_layout_is_an_error(tmp_path: Path) -> None:
    write_agnews(tmp_path / "ag_news_train.csv", AG_TRAIN)
    with pytest.raises(DatasetFormatError, match="counterpart"):
        get_task("agnews").load(tmp_path)


@pytest.mark.parametrize(
    ("task", "mentions"),
    [
        ("mnist", ["mnist.npz", "train-images-idx3-ubyte[.gz]", "MNIST/raw", "download=True"]),
        ("fmnist", ["fashion-mnist.npz", "t10k-labels-idx1-ubyte[.gz]", "FashionMNIST/raw"]),
        ("cifar10", ["cifar10.npz", "cifar-10-batches-py"]),
        ("agnews", ["ag_news_train.csv", "train.csv + test.csv"]),
    ],
)
def test_empty_directory_gives_one_clear_error(
    tmp_path: Path, task: str, mentions: list[str], no_debian_fmnist: None
) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        get_task(task).load(tmp_path)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, DatasetError)
    message = str(err.value)
    assert f"data directory '{tmp_path}'" in message and "Accepted layouts" in message
    for text in mentions:
        assert text in message


@pytest.mark.parametrize(
    ("writer", "match"),
    [
        (lambda d: (d / "mnist.npz").write_bytes(b"garbage"), "npz"),
        (lambda d: np.savez(d / "mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8)), "missing arrays"),
        (lambda d: np.savez(d / "mnist.npz", x_train=np.zeros((2, 27, 28), np.uint8), y_train=np.zeros(2, int),
                            x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, int)), "shape"),
        (lambda d: np.savez(d / "mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.array([0, 10]),
                            x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, int)), "labels"),
        (lambda d: np.savez(d / "mnist.npz", x_train=np.zeros((2, 28, 28), np.float32), y_train=np.zeros(2, int),
                            x_test=np.zeros((1, 28, 28), np.float32), y_test=np.zeros(1, int)), "uint8"),
        (lambda d: (write_idx_set(d, compress=True), (d / "t10k-labels-idx1-ubyte.gz").unlink()), "Incomplete IDX"),
    ],
)
def test_malformed_mnist_gives_format_error(tmp_path: Path, writer, match: str) -> None:
    writer(tmp_path)
    with pytest.raises(DatasetFormatError, match=match) as err:
        get_task("mnist").load(tmp_path)
    assert str(tmp_path) in str(err.value) and "Accepted layouts" in str(err.value)


def test_malformed_torchvision_cifar_folder(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DatasetFormatError, match="CIFAR10"):
        get_task("cifar10").load(tmp_path)


def test_digits_split_is_fixed_and_stratified() -> None:
    train, test = get_task("digits").load()
    again, _ = get_task("digits").load("/nonexistent/ignored")
    assert (len(train), len(test)) == (1347, 450)
    assert np.array_equal(train.targets, again.targets)
    assert train.data.dtype == torch.float32 and train.data.shape[1:] == (1, 8, 8)
    assert 0.0 <= float(train.data.min()) and float(train.data.max()) <= 1.0
    assert np.all(np.bincount(test.targets, minlength=10) >= 43)


# ============================================================================ real offline data


@pytest.fixture
def real_data_dir() -> Path:
    return ds.default_data_dir()


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"offline dataset file not present: {path.name}")
    return path


def test_real_mnist(real_data_dir: Path) -> None:
    need(real_data_dir / "mnist.npz")
    train, test = get_task("mnist").load(real_data_dir)
    assert train.data.shape == (60_000, 1, 28, 28) and test.data.shape == (10_000, 1, 28, 28)
    assert train.data.dtype == torch.uint8 and train.targets.dtype == np.int64
    assert train.targets[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.targets[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_real_fmnist_from_debian_package() -> None:
    need(ds.DEBIAN_FMNIST_DIR / "train-images-idx3-ubyte.gz")
    train, test = ds.load_fmnist(ds.DEBIAN_FMNIST_DIR)
    assert train.data.shape == (60_000, 1, 28, 28) and test.data.shape == (10_000, 1, 28, 28)
    assert train.targets[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert np.bincount(train.targets).tolist() == [6000] * 10


def test_real_cifar10(real_data_dir: Path) -> None:
    need(real_data_dir / "cifar10.npz")
    train, test = get_task("cifar10").load(real_data_dir)
    assert train.data.shape == (50_000, 3, 32, 32) and test.data.shape == (10_000, 3, 32, 32)
    assert train.data.dtype == torch.uint8
    assert np.bincount(train.targets).tolist() == [5000] * 10


def test_real_agnews(real_data_dir: Path) -> None:
    need(real_data_dir / "ag_news_train.csv")
    train, test = get_task("agnews").load(real_data_dir)
    assert (len(train), len(test)) == (11_997, 7_600)
    assert np.bincount(test.targets).tolist() == [1900] * 4
    assert len(train.vocab) == ds.AGNEWS_VOCAB_SIZE
    assert int(train.data.max()) < ds.AGNEWS_VOCAB_SIZE


# ============================================================================ bundled MNIST subset


def test_mnist_mini_where_the_fab_cannot_carry_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An app installed from a FAB has no bundled .npz: the task then reads it from data-dir."""
    import shutil

    from clients.tasks import datasets as ds_module

    shutil.copy(ds_module.MNIST_MINI_PATH, tmp_path / "mnist_mini.npz")
    monkeypatch.setattr(ds_module, "MNIST_MINI_PATH", tmp_path / "not-installed" / "mnist_mini.npz")
    train, test = get_task("mnist-mini").load(tmp_path)
    assert (len(train), len(test)) == (10_000, 2_000)
    with pytest.raises(DatasetNotFoundError, match="make_mnist_mini"):
        get_task("mnist-mini").load(tmp_path / "empty")


def test_mnist_mini_ships_with_the_repository(tmp_path: Path) -> None:
    task = get_task("mnist-mini")
    assert task.build_model().__class__ is MnistCNN
    train, test = task.load(tmp_path / "nothing-here")  # the bundled copy wins over the folder
    assert (len(train), len(test)) == (10_000, 2_000)
    assert np.bincount(train.targets).tolist() == [1000] * 10
    assert np.bincount(test.targets).tolist() == [200] * 10
    x, y = train.get_batch(np.arange(4))
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_mnist_mini_missing_file_says_how_to_rebuild(tmp_path: Path) -> None:
    from clients.tasks.datasets import DatasetNotFoundError, load_mnist_mini

    with pytest.raises(DatasetNotFoundError, match="make_mnist_mini"):
        load_mnist_mini(tmp_path / "mnist_mini.npz")


def test_mnist_mini_is_its_recipe_applied_to_mnist(real_data_dir: Path, tmp_path: Path) -> None:
    """The committed file is exactly what make_mnist_mini builds from full MNIST."""
    from clients.tasks.datasets import MNIST_MINI_PATH
    from clients.tasks.make_mnist_mini import build

    try:
        rebuilt = build(real_data_dir, tmp_path / "mini.npz")
    except DatasetError:
        pytest.skip("full MNIST not found in the offline data folder")
    with np.load(MNIST_MINI_PATH) as shipped, np.load(rebuilt) as fresh:
        assert sorted(shipped.files) == sorted(fresh.files)
        for key in shipped.files:
            assert np.array_equal(shipped[key], fresh[key]), key


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.int32)


@pytest.mark.parametrize("shape", [(5, 3, 8, 6), (2, 4, 7, 9), (1, 1, 4, 4)])
def test_fast_max_pool_is_bitwise_nn_max_pool_with_ties(shape):
    # Values on a coarse grid make ties in most windows: the gradient must still go to each
    # window's first maximum, as nn.MaxPool2d sends it.
    gen = torch.Generator().manual_seed(sum(shape))
    for kernel, stride in ((2, None), (3, 2), (2, 1)):
        fast, ref = FastMaxPool2d(kernel, stride), torch.nn.MaxPool2d(kernel, stride)
        for _ in range(20):
            x = (torch.randint(-3, 4, shape, generator=gen).float() / 2).requires_grad_()
            y_ref = ref(x)
            g = torch.randn(y_ref.shape, generator=gen)
            (gx_ref,) = torch.autograd.grad(y_ref, x, g)
            y = fast(x)
            (gx,) = torch.autograd.grad(y, x, g)
            assert y.shape == y_ref.shape and y.is_contiguous()
            assert torch.equal(_bits(y), _bits(y_ref)) and torch.equal(_bits(gx), _bits(gx_ref))
            with torch.no_grad():
                assert torch.equal(_bits(fast(x)), _bits(y_ref))


def test_mnist_cnn_step_is_bitwise_the_one_with_torch_max_pool():
    torch.manual_seed(0)
    fast = MnistCNN()
    ref = MnistCNN()
    ref.load_state_dict(fast.state_dict())
    ref.pool = torch.nn.MaxPool2d(2)
    assert isinstance(fast.pool, FastMaxPool2d)
    x, y = torch.randn(50, 1, 28, 28), torch.randint(0, 10, (50,))
    grads = []
    for model in (fast, ref):
        torch.manual_seed(1)  # the same dropout masks
        model.train()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(torch.equal(_bits(a), _bits(b)) for a, b in zip(*grads, strict=True))
    fast.eval(), ref.eval()
    with torch.no_grad():
        assert torch.equal(_bits(fast(x)), _bits(ref(x)))


def _packed_reference(model: TextRNN, tokens: torch.Tensor) -> torch.Tensor:
    """TextRNN's function through nn.LSTM over a packed sequence (what CUDA runs)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    lengths = (tokens != 0).sum(dim=1).clamp(min=1)
    packed = pack_padded_sequence(model.embedding(tokens), lengths, batch_first=True, enforce_sorted=False)
    _, (h_n, _) = model.lstm(packed)
    return model.fc(torch.cat([h_n[-2], h_n[-1]], dim=1))


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_textrnn_unrolled_cpu_path_is_the_packed_lstm(num_layers: int) -> None:
    torch.manual_seed(num_layers)
    model = TextRNN(50, embed_dim=8, hidden_size=6, num_layers=num_layers, num_classes=4)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([1, 9, 4, 12, 12, 2])
    tokens = torch.randint(1, 50, (6, 15), generator=gen)
    tokens[torch.arange(15).expand(6, 15) >= lengths.unsqueeze(1)] = 0
    tokens[0] = 0  # an empty text reads one padding step, as the packed module does
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    grads = []
    for forward in (model, lambda t: _packed_reference(model, t)):
        model.zero_grad(set_to_none=True)
        out = forward(tokens)
        torch.nn.functional.cross_entropy(out, labels).backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (out, g), (ref_out, ref_g) = grads
    assert torch.allclose(out, ref_out, atol=1e-6, rtol=0)
    for a, b in zip(g, ref_g, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
