"""Byte-level corpora (vocabulary 256) for the perplexity suite, each with a deterministic, disjoint
train/validation split and the SHA-256 of the bytes the splits come from.

    synthetic      seeded first-order Markov text with copy segments; its entropy rate known exactly (synthetic.py)
    stdlib         the top-level *.py files of the running Python's standard library, sorted, concatenated
    enwik8         the first 10^8 bytes of English Wikipedia (Hutter prize), downloaded once into the cache
    enwik8:PATH    enwik8 (or enwik8.zip) from a file you supply
    PATH           any file of at least MIN_FILE_BYTES bytes

Splits: train / validation / test, disjoint and in that order: the last `valid_fraction` (default 10%) of the
bytes is test, the `valid_fraction` before it validation, the rest (80%) training; synthetic splits between
whole blocks; enwik8 keeps the standard 90M/5M/5M convention. Validation selects learning rates, test reports.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import io
import os
import platform
import sys
import sysconfig
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from bench.perplexity.synthetic import CorpusError, Synthetic, synthetic_entropy_rate, window_floor_bpb

CORPORA = ("synthetic", "stdlib", "enwik8")
VALID_FRACTION = 0.1  # of the bytes, for validation and again for test
SPLITS = ("train", "valid", "test")
IGNORE = -100  # a label that is not scored (torch's cross-entropy default)
MIN_FILE_BYTES = 2 * 1024
CACHE_ENV = "GSS_BENCH_CACHE"
ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
# SHA-256 of enwik8.zip (36,445,475 bytes) as published in huggingface/datasets
# datasets/enwik8/dataset_infos.json (download_checksums), and of the extracted 100,000,000-byte
# enwik8, as recorded by several independent projects (e.g. the tamp compressor's test data).
ENWIK8_ZIP_SHA256 = "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc"
ENWIK8_SHA256 = "2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8"
ENWIK8_TRAIN, ENWIK8_VALID = 0.90, 0.05  # of 10^8 bytes: 90M train, then 5M validation


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors field-wise is ambiguous
class Corpus:
    name: str
    train: torch.Tensor  # uint8, 1-D
    valid: torch.Tensor
    test: torch.Tensor
    sha256: str  # of the full content the splits come from
    entropy_floor_bpb: float | None  # exact entropy rate for synthetic, None for real text
    source: str
    window_floor: Callable | None = None  # (*, seq_len, multiple) -> bits/byte, synthetic only

    def split(self, split):
        if split not in SPLITS:
            raise CorpusError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return getattr(self, split)

    def _check(self, split, seq_len):
        data = self.split(split)
        if len(data) < _positive(seq_len, "seq_len") + 1:
            raise CorpusError(
                f"corpus {self.name}: the {split} split has {len(data):,} bytes, too few for "
                f"seq_len {seq_len} (a window needs seq_len + 1 = {seq_len + 1:,})"
            )
        return data

    def batch(self, split, *, batch, seq_len, generator):
        """`batch` random windows of seq_len + 1 bytes -> (ids, labels), labels = ids shifted by one."""
        data = self._check(split, seq_len)
        starts = torch.randint(0, len(data) - seq_len, (_positive(batch, "batch"),), generator=generator)
        return _windows(data, starts, seq_len)

    def scored_windows(self, split, *, seq_len, count, multiple=1, max_multiple=None):
        """Fixed evaluation windows that score the same target bytes at every `multiple`: `count` end offsets
        evenly spaced over the split (the first max_multiple * seq_len + 1 bytes in, the last at its end), and
        for each the window of multiple * seq_len + 1 bytes that ends there -> (ids, labels), both
        (count, multiple * seq_len), labels IGNORE but on the last seq_len positions. Only the context grows
        with `multiple`, so every model and every multiple is scored on identical bytes."""
        max_multiple = _positive(max_multiple or multiple, "max_multiple")
        if _positive(multiple, "multiple") > max_multiple:
            raise CorpusError(f"multiple {multiple} exceeds max_multiple {max_multiple}")
        data = self._check(split, max_multiple * _positive(seq_len, "seq_len"))
        first, count = max_multiple * seq_len + 1, _positive(count, "count")
        ends = first + torch.arange(count) * (len(data) - first) // max(1, count - 1)
        ids, labels = _windows(data, ends - (multiple * seq_len + 1), multiple * seq_len)
        labels[:, :-seq_len] = IGNORE
        return ids, labels


def _positive(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise CorpusError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _windows(data, starts, seq_len):
    window = data[starts[:, None] + torch.arange(seq_len + 1)].long()
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()


def _corpus(name, content, *, source, valid_fraction=None, bounds=None, floor=None):
    """Corpus from the content bytes (bytes or uint8 array); bounds = (train_end, valid_end) (test: the rest),
    or else valid_fraction of the bytes each for validation and test."""
    array = np.frombuffer(content, dtype=np.uint8).copy() if isinstance(content, bytes) else content
    n = len(array)
    if bounds is None:
        held = round(n * _fraction(valid_fraction))
        bounds = (n - 2 * held, n - held)
    train_end, valid_end = bounds
    if n == 0:
        raise CorpusError(f"corpus {name} ({source}) is empty")
    if n < MIN_FILE_BYTES or train_end < 2 or valid_end - train_end < 2 or n - valid_end < 2:
        raise CorpusError(
            f"corpus {name} ({source}) has {n:,} bytes, too few for its train/validation/test split "
            f"(a corpus needs at least {MIN_FILE_BYTES:,})"
        )
    data = torch.from_numpy(array)
    return Corpus(
        name=name,
        train=data[:train_end],
        valid=data[train_end:valid_end],
        test=data[valid_end:],
        sha256=hashlib.sha256(array).hexdigest(),
        entropy_floor_bpb=floor,
        source=source,
    )


def _fraction(valid_fraction):
    if not isinstance(valid_fraction, (int, float)) or not 0 < valid_fraction < 0.5:
        raise CorpusError(
            f"valid_fraction must be strictly between 0 and 0.5 (validation and test each take it), "
            f"got {valid_fraction!r}"
        )
    return valid_fraction


def synthetic(*, seed=0, config=Synthetic(), valid_fraction=VALID_FRACTION):
    """The synthetic corpus; test is the last round(valid_fraction * blocks) whole blocks, validation as many
    before it."""
    transition = config.transition(rng := np.random.default_rng(seed))
    blocks = -(-config.size // config.block_len)
    held = round(blocks * _fraction(valid_fraction))
    data = config.sample(transition, blocks=blocks, rng=rng).reshape(-1)
    floor = synthetic_entropy_rate(transition, markov_len=config.markov_len, copy_len=config.copy_len)
    bounds = ((blocks - 2 * held) * config.block_len, (blocks - held) * config.block_len)
    corpus = _corpus("synthetic", data, bounds=bounds, floor=floor, source=f"synthetic seed={seed} {config}")
    # the least expected bits/byte on the scored bytes of a window (seq_len=T, multiple=k), knowing the phase
    return replace(corpus, window_floor=functools.partial(window_floor_bpb, transition, config))


def stdlib_files():
    """The top-level *.py files of the running Python's standard library, sorted by name."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted((p for p in root.glob("*.py") if p.is_file()), key=lambda p: p.name)


def stdlib(*, valid_fraction=VALID_FRACTION):
    files = stdlib_files()
    if not files:
        raise CorpusError(f"no .py files in the standard library directory {sysconfig.get_paths()['stdlib']}")
    content = b"".join(_read(p, what="standard library file") for p in files)
    source = f"{files[0].parent} (Python {platform.python_version()}, {len(files)} files)"
    return _corpus("stdlib", content, valid_fraction=valid_fraction, source=source)


def _read(path, *, what):
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{what} {path} does not exist")
    if not path.is_file():
        raise CorpusError(f"{what} {path} is not a file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise CorpusError(f"cannot read {what} {path}: {e.strerror or e}") from e


def from_file(path, *, valid_fraction=VALID_FRACTION):
    content = _read(path, what="corpus file")
    return _corpus(str(path), content, valid_fraction=valid_fraction, source=str(Path(path).resolve()))


def default_cache_dir():
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "gss-bench")


def _unzip(raw, path):
    """The enwik8 member of raw (the bytes of path) if it is a zip archive, else raw itself."""
    if not zipfile.is_zipfile(archive := io.BytesIO(raw)):
        return raw
    try:
        with zipfile.ZipFile(archive) as z:
            return z.read("enwik8")
    except KeyError:
        raise CorpusError(f"{path} has no member named enwik8") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise CorpusError(f"cannot read {path}: {e}") from e


def download(url, path, *, sha256, opener=None):
    """Fetch url into path via a temporary file in the same directory; verified before it is moved in."""
    opener = opener or functools.partial(urllib.request.urlopen, timeout=60)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as e:
        raise CorpusError(f"cannot write to the cache directory {path.parent}: {e.strerror or e}") from e
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, opener(url) as response:
            print(f"downloading {url} -> {path}", file=sys.stderr)  # only once the server answered
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise CorpusError(
                f"checksum did not match for {url}: SHA-256 {digest.hexdigest()}, expected {sha256}; "
                f"the download was deleted"
            )
        os.replace(tmp, path)
    except BaseException as e:  # never leave a partial or bad download behind
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (OSError, ValueError, http.client.HTTPException)) and not isinstance(e, CorpusError):
            reason = getattr(e, "reason", None) or e
            raise CorpusError(
                f"cannot download enwik8 from {url} ({reason}); download {ENWIK8_URL} yourself and "
                f"put enwik8.zip in {path.parent} (or set {CACHE_ENV}), or pass "
                f"--corpus enwik8:/path/to/enwik8 (or .zip)"
            ) from e
        raise


def enwik8(
    *, path=None, cache_dir=None, url=ENWIK8_URL, opener=None, zip_sha256=ENWIK8_ZIP_SHA256, sha256=ENWIK8_SHA256
):
    """enwik8 from PATH (the file or its zip; its content must hash to sha256), or else from
    CACHE/enwik8.zip, downloaded from url once and checked against zip_sha256 before every use."""
    if path is not None:
        content = _unzip(_read(path, what="enwik8 file"), path)
        if sha256 is not None and (digest := hashlib.sha256(content).hexdigest()) != sha256:
            raise CorpusError(
                f"{path}: checksum did not match: the content's SHA-256 is {digest}, enwik8's is "
                f"{sha256} ({ENWIK8_URL})"
            )
        source = str(Path(path).resolve())
    else:
        cached = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "enwik8.zip"
        raw = cached.read_bytes() if cached.is_file() else None
        if raw is None or hashlib.sha256(raw).hexdigest() != zip_sha256:
            cached.unlink(missing_ok=True)  # ours, and corrupt or absent: fetch it again
            download(url, cached, sha256=zip_sha256, opener=opener)
            raw = cached.read_bytes()
        content, source = _unzip(raw, cached), str(cached)
    n = len(content)
    return _corpus(
        "enwik8", content, bounds=(int(n * ENWIK8_TRAIN), int(n * (ENWIK8_TRAIN + ENWIK8_VALID))), source=source
    )


def load_corpus(spec, *, seed=0, cache_dir=None, valid_fraction=VALID_FRACTION, opener=None):
    """A corpus by name (CORPORA), enwik8:PATH, or a path to any file. seed applies to synthetic only;
    enwik8 keeps its standard split whatever valid_fraction says."""
    spec = str(spec)
    if spec == "synthetic":
        return synthetic(seed=seed, valid_fraction=valid_fraction)
    if spec == "stdlib":
        return stdlib(valid_fraction=valid_fraction)
    if spec == "enwik8":
        return enwik8(cache_dir=cache_dir, opener=opener)
    if spec.startswith("enwik8:"):
        if not (path := spec.removeprefix("enwik8:")):
            raise CorpusError("enwik8: needs a path, e.g. enwik8:/data/enwik8 or enwik8:/data/enwik8.zip")
        return enwik8(path=path)
    if Path(spec).exists() or os.sep in spec or Path(spec).suffix:
        return from_file(spec, valid_fraction=valid_fraction)
    raise CorpusError(
        f"unknown corpus {spec!r} (and no file by that name); valid: {', '.join(CORPORA)}, "
        f"enwik8:PATH, or a path to a text file"
    )
