"""Corpora: splits, hashes, windows, the standard library and files, enwik8 (download, cache, checksum). The
synthetic source itself: tests/test_synthetic.py."""

import hashlib
import io
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch

from bench.core.config import UsageError
from bench.perplexity import data as D
from bench.perplexity.data import CorpusError, Synthetic, load_corpus

SMALL = Synthetic(size=200_000)


def content_of(corpus):
    return torch.cat([corpus.train, corpus.valid, corpus.test]).numpy().tobytes()


def text_file(tmp_path, size=10_000, name="corpus.txt"):
    path = tmp_path / name
    path.write_bytes(bytes((i * 7 + i // 13) % 95 + 32 for i in range(size)))
    return path


# ----- synthetic -----


def test_synthetic_is_deterministic_per_seed():
    a, b, c = (D.synthetic(seed=s, config=SMALL) for s in (0, 0, 1))
    assert content_of(a) == content_of(b) and a.sha256 == b.sha256
    assert a.entropy_floor_bpb == b.entropy_floor_bpb
    assert content_of(a) != content_of(c) and a.sha256 != c.sha256
    assert a.entropy_floor_bpb != c.entropy_floor_bpb


def test_synthetic_split_sha_and_size(synth):
    content = content_of(synth)
    assert hashlib.sha256(content).hexdigest() == synth.sha256
    assert synth.train.dtype == torch.uint8 and synth.train.ndim == 1
    assert len(synth.train) > 1_750_000
    block = Synthetic().block_len
    assert all(len(part) % block == 0 for part in (synth.train, synth.valid, synth.test))  # whole blocks
    assert len(synth.valid) / len(content) == len(synth.test) / len(content) == pytest.approx(0.1, abs=0.001)


def test_synthetic_rejects_bad_config():
    with pytest.raises(CorpusError):
        Synthetic(copy_len=200, markov_len=100)
    with pytest.raises(CorpusError):
        Synthetic(alphabet=100)
    with pytest.raises(CorpusError):
        D.synthetic(config=Synthetic(size=100))
    with pytest.raises(CorpusError, match="valid_fraction"):
        D.synthetic(config=SMALL, valid_fraction=1.5)


# ----- windows -----


def test_scored_windows_are_fixed_evenly_spaced_and_end_in_their_split(synth):
    ids, labels = synth.scored_windows("valid", seq_len=256, count=16)
    again = load_corpus("synthetic").scored_windows("valid", seq_len=256, count=16)  # another model, another load
    assert torch.equal(ids, again[0]) and torch.equal(labels, again[1])
    assert ids.shape == labels.shape == (16, 256) and ids.dtype == torch.long
    assert torch.equal(ids[:, 1:], labels[:, :-1])
    valid = synth.valid.long()
    span = len(valid) - 257
    for i in range(16):
        end = 257 + i * span // 15
        assert torch.equal(ids[i], valid[end - 257 : end - 1]) and torch.equal(labels[i], valid[end - 256 : end])
    assert span // 15 >= 257  # non-overlapping
    (first,), _ = synth.scored_windows("valid", seq_len=256, count=1)
    assert torch.equal(first, valid[:256])
    many, _ = synth.scored_windows("valid", seq_len=len(valid) - 1, count=3)  # overlapping when they cannot fit
    assert torch.equal(many[0], many[2])


def test_batch_windows(synth):
    ids, labels = synth.batch("train", batch=4, seq_len=64, generator=torch.Generator().manual_seed(0))
    again, _ = synth.batch("train", batch=4, seq_len=64, generator=torch.Generator().manual_seed(0))
    other, _ = synth.batch("train", batch=4, seq_len=64, generator=torch.Generator().manual_seed(1))
    assert ids.shape == labels.shape == (4, 64) and ids.dtype == labels.dtype == torch.long
    assert torch.equal(ids[:, 1:], labels[:, :-1]) and torch.equal(ids, again) and not torch.equal(ids, other)
    train = synth.train.numpy().tobytes()
    for row, lab in zip(ids, labels):
        window = bytes(row.tolist()) + bytes([lab[-1].item()])
        assert window in train
    full, _ = synth.batch("valid", batch=2, seq_len=len(synth.valid) - 1, generator=torch.Generator())
    assert torch.equal(full[0], synth.valid[:-1].long())


def test_windows_too_long_or_bad_arguments(synth):
    n = len(synth.test)
    with pytest.raises(CorpusError, match=f"test split has {n:,} bytes.*seq_len {n}"):
        synth.scored_windows("test", seq_len=n, count=1)
    with pytest.raises(CorpusError, match="test split"):  # room for the longest evaluation's context too
        synth.scored_windows("test", seq_len=n // 4, count=1, max_multiple=4)
    with pytest.raises(CorpusError, match="train split"):
        synth.batch("train", batch=1, seq_len=len(synth.train), generator=torch.Generator())
    with pytest.raises(CorpusError, match="split"):
        synth.batch("holdout", batch=1, seq_len=8, generator=torch.Generator())
    with pytest.raises(CorpusError):
        synth.scored_windows("valid", seq_len=8, count=0)
    assert issubclass(CorpusError, UsageError)


# ----- stdlib and files -----


def test_stdlib_corpus():
    files = D.stdlib_files()
    if not files:
        pytest.skip("no .py files in this Python's standard library directory")
    assert [p.name for p in files] == sorted(p.name for p in files)
    assert all(p.suffix == ".py" and p.parent == files[0].parent for p in files)
    assert "site-packages" not in str(files[0])
    corpus = load_corpus("stdlib")
    content = content_of(corpus)
    assert content == b"".join(p.read_bytes() for p in files)
    assert len(content) > 1_000_000 and hashlib.sha256(content).hexdigest() == corpus.sha256
    assert len(corpus.valid) == len(corpus.test) == round(0.1 * len(content)) and corpus.entropy_floor_bpb is None


def test_file_corpus(tmp_path):
    path = text_file(tmp_path)
    corpus = load_corpus(str(path))
    assert content_of(corpus) == path.read_bytes()
    assert corpus.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (8000, 1000, 1000)
    assert corpus.name == str(path) and corpus.entropy_floor_bpb is None
    custom = load_corpus(str(path), valid_fraction=0.25)
    assert (len(custom.train), len(custom.valid), len(custom.test)) == (5000, 2500, 2500)


def test_bad_files_raise_corpus_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    short = text_file(tmp_path, size=D.MIN_FILE_BYTES - 1, name="short.txt")
    for spec, message in [
        (tmp_path / "missing.txt", "does not exist"),
        (empty, "is empty"),
        (short, "too few.*needs at least"),
        (tmp_path, "is not a file"),
    ]:
        with pytest.raises(CorpusError, match=message) as error:
            load_corpus(str(spec))
        assert str(spec) in str(error.value)


def test_unreadable_file(tmp_path, monkeypatch):
    path = text_file(tmp_path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):  # root reads anything: fail the read instead

            def denied(self):
                raise PermissionError(13, "Permission denied", str(self))

            monkeypatch.setattr(Path, "read_bytes", denied)
        with pytest.raises(CorpusError, match=f"cannot read corpus file {path}: Permission denied"):
            load_corpus(str(path))
    finally:
        path.chmod(0o644)


def test_unknown_name():
    with pytest.raises(CorpusError, match="unknown corpus 'wikitext'.*synthetic, stdlib, enwik8.*path"):
        load_corpus("wikitext")


# ----- enwik8 -----


def fake_enwik8(tmp_path, size=20_000):
    content = bytes(range(256)) * (size // 256) + b"<page>" * 10
    path = tmp_path / "served" / "enwik8.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("enwik8", content)
    return content, path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_enwik8_downloads_once_then_uses_the_cache(tmp_path):
    content, served, zip_sha = fake_enwik8(tmp_path)
    calls = []

    def opener(url):
        calls.append(url)
        return urllib.request.urlopen(url)

    cache = tmp_path / "cache"
    options = dict(cache_dir=cache, url=served.as_uri(), zip_sha256=zip_sha)
    corpus = D.enwik8(opener=opener, **options)
    assert calls == [served.as_uri()] and sorted(os.listdir(cache)) == ["enwik8.zip"]
    assert corpus.sha256 == hashlib.sha256(content).hexdigest()
    n = len(content)
    assert content_of(corpus) == content  # 90% train, then 5% validation, then 5% test
    assert len(corpus.train) == int(0.9 * n)

    def offline(url):
        raise AssertionError("the cached copy should be used")

    assert D.enwik8(opener=offline, **options).sha256 == corpus.sha256


def test_enwik8_wrong_checksum_leaves_nothing(tmp_path):
    _, served, _ = fake_enwik8(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(CorpusError, match="checksum did not match"):
        D.enwik8(cache_dir=cache, url=served.as_uri(), zip_sha256="0" * 64)
    assert os.listdir(cache) == []


def test_enwik8_corrupt_cache_is_fetched_again(tmp_path):
    content, served, zip_sha = fake_enwik8(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "enwik8.zip").write_bytes(b"truncated")
    corpus = D.enwik8(
        cache_dir=cache, url=served.as_uri(), zip_sha256=zip_sha, opener=lambda url: io.BytesIO(served.read_bytes())
    )
    assert corpus.sha256 == hashlib.sha256(content).hexdigest()


def test_enwik8_offline_and_uncached(tmp_path, monkeypatch):
    def offline(url):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "env-cache"))
    assert D.default_cache_dir() == tmp_path / "env-cache"
    with pytest.raises(CorpusError) as error:
        load_corpus("enwik8", opener=offline)
    message = str(error.value)
    for part in ("no network", D.ENWIK8_URL, str(tmp_path / "env-cache"), "enwik8:/path/to/enwik8"):
        assert part in message
    assert os.listdir(tmp_path / "env-cache") == []


def test_enwik8_from_a_path(tmp_path):
    content, served, _ = fake_enwik8(tmp_path)
    raw = tmp_path / "enwik8"
    raw.write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    for path in (raw, served):
        corpus = D.enwik8(path=path, sha256=digest)
        assert corpus.sha256 == digest and len(corpus.valid) == int(0.95 * len(content)) - int(0.9 * len(content))
        assert len(corpus.test) == len(content) - int(0.95 * len(content))  # the standard 90M/5M/5M
    with pytest.raises(CorpusError, match="checksum did not match"):
        load_corpus(f"enwik8:{raw}")  # not the real enwik8
    assert raw.exists()  # a file the user supplied is never deleted
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(f"enwik8:{tmp_path / 'nope'}")
    assert Path(D.ENWIK8_URL).name == "enwik8.zip" and len(D.ENWIK8_ZIP_SHA256) == len(D.ENWIK8_SHA256) == 64
