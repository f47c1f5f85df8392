"""The official I2E release's event layouts: files built here from the format description
(Hugging Face parquet rows, npz class folders), read back, written, and refused by name."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from i2e_neuro.datasets.official import (
    HFParquetEvents,
    NpzFolderEvents,
    OfficialFormatError,
    decode_record,
    encode_record,
    write_hf_parquet,
)


def official_bytes(events: np.ndarray) -> bytes:
    """A row's ``data`` as the description says: a saved uint8 array, 8 header bytes (four
    uint16 T, C, H, W), then packbits of the flattened events (written independently of ours)."""
    shape = np.array(events.shape, dtype=np.uint16)
    body = np.packbits(events.astype(np.uint8).flatten())
    arr = np.concatenate([np.frombuffer(shape.tobytes(), dtype=np.uint8), body])
    f = io.BytesIO()
    np.save(f, arr)
    return f.getvalue()


def official_decode(data: bytes) -> torch.Tensor:
    """The release README's decoding, transcribed: header -> shape, unpack, drop the padding."""
    with io.BytesIO(data) as f:
        raw = np.load(f)
    shape = tuple(raw[:8].view(np.uint16))
    bits = np.unpackbits(raw[8:])[: int(np.prod(shape))]
    return torch.from_numpy(bits.reshape(shape).astype(np.float32).copy())


def random_events(rng, t=8, h=5, w=7) -> np.ndarray:
    return rng.random((t, 2, h, w)) < 0.3  # 8*2*5*7 = 560 bits: padding exercised for w=7,h=5?


def write_table(path, labels, datas, group=2):
    table = pa.table({"label": pa.array(labels, pa.int64()), "data": pa.array(datas, pa.binary())})
    pq.write_table(table, path, row_group_size=group)


@pytest.fixture
def hf_root(tmp_path):
    rng = np.random.default_rng(0)
    cfg = tmp_path / "I2E-CIFAR10"
    cfg.mkdir()
    samples = {"train": [], "validation": []}
    for split, n, files in (("train", 5, 2), ("validation", 3, 1)):
        per = -(-n // files)
        for k in range(files):
            rows = [(random_events(rng), int(rng.integers(10))) for _ in range(per)][: n - k * per]
            samples[split] += rows
            write_table(
                cfg / f"{split}-{k:05d}-of-{files:05d}.parquet",
                [y for _, y in rows],
                [official_bytes(e) for e, _ in rows],
            )
    return tmp_path, samples


def test_hf_rows_read_across_files_and_row_groups(hf_root):
    root, samples = hf_root
    for split, ours in (("train", "train"), ("validation", "test")):
        ds = HFParquetEvents(root, "I2E-CIFAR10", ours)
        assert len(ds) == len(samples[split])
        assert len(ds._groups) > len(ds.files)  # several row groups per file
        for i, (events, label) in enumerate(samples[split]):
            got, y = ds[i]
            assert got.dtype == torch.bool and tuple(got.shape) == events.shape
            assert np.array_equal(got.numpy(), events) and y == label
        assert ds.num_classes() == 1 + max(y for _, y in samples[split])


def test_hf_damaged_row_and_wrong_header_named(hf_root, tmp_path):
    rng = np.random.default_rng(1)
    good = official_bytes(random_events(rng))
    wrong_header = bytearray(good)
    raw = np.load(io.BytesIO(good))
    raw[:8] = np.frombuffer(np.array([8, 2, 6, 7], np.uint16).tobytes(), np.uint8)  # H 5 -> 6
    buf = io.BytesIO()
    np.save(buf, raw)
    wrong_header = buf.getvalue()
    folder = tmp_path / "bad"
    folder.mkdir()
    write_table(folder / "train-00000-of-00001.parquet", [1, 2, 3], [good, good[:-9], wrong_header])
    ds = HFParquetEvents(folder, None, "train")
    assert ds[0][1] == 1
    with pytest.raises(
        OfficialFormatError, match=r"train-00000-of-00001\.parquet: row 1 of row group 0"
    ):
        ds[1]
    with pytest.raises(
        OfficialFormatError, match=r"row 0 of row group 1: header says .*\(8, 2, 6, 7\)"
    ):
        ds[2]


def test_hf_foreign_files_refused_by_name(tmp_path):
    (tmp_path / "train-00000.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(OfficialFormatError, match=r"train-00000\.parquet: not a readable parquet"):
        HFParquetEvents(tmp_path, None, "train")
    (tmp_path / "train-00000.parquet").unlink()
    pq.write_table(pa.table({"image": [b"x"], "label": [0]}), tmp_path / "train-00000.parquet")
    with pytest.raises(OfficialFormatError, match=r"columns \['image', 'label'\]"):
        HFParquetEvents(tmp_path, None, "train")
    with pytest.raises(FileNotFoundError, match="no parquet files of split 'validation'"):
        HFParquetEvents(tmp_path, None, "test")


def test_our_records_decode_with_the_official_decoding(tmp_path):
    rng = np.random.default_rng(2)
    rows = [(random_events(rng, t=8, h=3, w=3), 4), (random_events(rng, t=4, h=9, w=11), 7)]
    path = tmp_path / "I2E-X" / "train-00000-of-00001.parquet"
    assert write_hf_parquet(path, iter(rows), rows_per_group=1) == 2
    table = pq.read_table(path, use_threads=False)
    assert table.schema.names == ["label", "data"]
    for (events, label), y, data in zip(
        rows, table.column("label").to_pylist(), table.column("data").to_pylist()
    ):
        assert y == label
        assert torch.equal(official_decode(data), torch.from_numpy(events).float())
        assert data == official_bytes(events)  # byte for byte the described layout
    assert np.array_equal(decode_record(encode_record(rows[1][0])), rows[1][0])


def test_npz_folders(tmp_path):
    rng = np.random.default_rng(3)
    expected = {}
    for split in ("train", "val"):
        for cls in ("cat", "ant"):
            (tmp_path / split / cls).mkdir(parents=True)
            for k in range(2):
                ev = random_events(rng).astype(np.float32)  # the release saves floats or bools
                np.savez(tmp_path / split / cls / f"{k}.npz", ev)
                expected[(split, cls, k)] = ev
    ds = NpzFolderEvents(tmp_path, "test")
    assert ds.classes == ["ant", "cat"] and len(ds) == 4
    got, label = ds[2]
    assert label == 1 and np.array_equal(got.numpy(), expected[("val", "cat", 0)].astype(bool))
    bad = tmp_path / "train" / "ant" / "9.npz"
    np.savez(bad, rng.random((8, 3, 5, 7)))
    ds = NpzFolderEvents(tmp_path, "train")
    with pytest.raises(OfficialFormatError, match=r"9\.npz: arr_0 has shape \(8, 3, 5, 7\)"):
        ds[2]
    bad.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(OfficialFormatError, match=r"9\.npz"):
        ds[2]


def test_damaged_records_refused():
    with pytest.raises(OfficialFormatError, match="here: 'data' is not a saved NumPy array"):
        decode_record(b"garbage", "here")
    buf = io.BytesIO()
    np.save(buf, np.zeros(20, np.float32))
    with pytest.raises(OfficialFormatError, match="float32 array"):
        decode_record(buf.getvalue(), "here")


def test_convert_writes_the_official_layout_with_the_official_protocol(tmp_path, capsys):
    """``convert --dataset mnist --format i2e-hf``: files named as the release names them,
    rows the official decoding reads, events equal to the official module's on the official
    preprocessing (no ties here is not assumed: strict vs >= is checked at ties only), the
    event-rate line with the catalogue's figure, and a rerun that skips what is done."""
    from PIL import Image

    from i2e_neuro.commands import convert as convert_cmd
    from i2e_neuro.datasets.formats import load_events
    from tests.datasets.test_convert_cli import write_idx
    from tests.oracles import official_i2e, official_preprocess

    rng = np.random.default_rng(5)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = rng.integers(0, 256, (7, 28, 28))
    labels = rng.integers(0, 10, 7)
    for split in ("train", "t10k"):
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    out = tmp_path / "I2E-MNIST"
    argv = ["--dataset", "mnist", "--root", tmp_path / "data", "--chunk-size", 3]
    argv += ["--format", "i2e-hf", "-o", out, "--no-progress"]
    assert convert_cmd.main([str(a) for a in argv]) == 0
    text = capsys.readouterr().out
    assert "the release's I2E-MNIST: 9.56% (32x32, ratio 0.1, whole dataset)" in text
    assert "official protocol, 32x32, ratio 0.1" in text
    names = sorted(p.name for p in out.glob("*.parquet"))
    assert names == [f"train-0000{k}-of-00003.parquet" for k in range(3)]
    table = pq.read_table(out / names[0], use_threads=False)
    first = official_decode(table.column("data").to_pylist()[0])
    assert tuple(first.shape) == (8, 2, 32, 32)
    # the official pipeline on the same picture (grey -> RGB PIL image), its module's events
    png = tmp_path / "0.png"
    Image.fromarray(images[0].astype(np.uint8)).save(png)
    events, values, threshold = official_i2e(
        official_preprocess(png, (32, 32))[None], 0.10, with_values=True
    )
    tie = values[:, 0] == threshold[0, 0]
    assert torch.equal(first.bool() | tie, events[:, 0].bool() | tie)
    ds = HFParquetEvents(tmp_path, "I2E-MNIST", "train")
    assert len(ds) == 7 and [ds[i][1] for i in range(7)] == labels.tolist()
    assert load_events(out / names[2]).events.shape == (8, 1, 2, 32, 32)
    assert convert_cmd.main([str(a) for a in argv]) == 0
    assert "3 file(s) already done, skipped" in capsys.readouterr().out
    assert (
        convert_cmd.main([str(a) for a in ["--format", "i2e-hf", png, "-o", tmp_path / "x"]]) == 2
    )
    assert "--format i2e-hf: the official layout stores a class label" in capsys.readouterr().err
