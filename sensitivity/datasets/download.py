"""Resumable, checksum-verified HTTP(S) downloads and safe tar extraction (standard library only)."""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import BinaryIO

try:
    from tqdm import tqdm
except ImportError:  # progress bars are optional
    tqdm = None


class ChecksumError(ValueError):
    """A downloaded file's digest differs from the expected one; it was moved to ``path``."""

    def __init__(self, url: str, path: Path, expected: str, actual: str) -> None:
        self.url, self.path, self.expected, self.actual = url, path, expected, actual
        super().__init__(
            f"checksum mismatch for {url}: expected {expected}, got {actual}; the file was moved to {path}"
        )


class DownloadError(OSError):
    """A download failed after all retries (or with a non-retryable HTTP status)."""


_DIGEST_LENGTHS = {"sha256": 64, "md5": 32}


def parse_checksum(checksum: str) -> tuple[str, str]:
    """``"sha256:<hex>"``, ``"md5:<hex>"`` (as published for PASCAL VOC) or a bare SHA-256 hex → (algorithm, hex)."""
    algorithm, _, digest = checksum.strip().lower().rpartition(":")
    algorithm = algorithm or "sha256"
    if algorithm not in _DIGEST_LENGTHS or not re.fullmatch(f"[0-9a-f]{{{_DIGEST_LENGTHS[algorithm]}}}", digest):
        raise ValueError(f"not a checksum of the form sha256:<64 hex> or md5:<32 hex>: {checksum!r}")
    return algorithm, digest


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256", chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file."""
    return file_digest(path, "sha256", chunk_size)


def verify_checksum(path: str | os.PathLike[str], checksum: str) -> bool:
    """Whether the file at ``path`` matches ``checksum`` (see :func:`parse_checksum`)."""
    algorithm, expected = parse_checksum(checksum)
    return file_digest(path, algorithm) == expected


def verify_sha256(path: str | os.PathLike[str], expected: str) -> bool:
    """Whether the file at ``path`` has the SHA-256 digest ``expected`` (hex, any case)."""
    return verify_checksum(path, "sha256:" + expected.strip())


def _copy(response: BinaryIO, out: BinaryIO, chunk_size: int, total: int | None, done: int) -> int:
    """Stream ``response`` into ``out``; return the number of bytes written."""
    bar = None
    if tqdm is not None:
        bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, leave=False, disable=None)
    written = 0
    try:
        while chunk := response.read(chunk_size):
            out.write(chunk)
            written += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return written


def _fetch(url: str, part: Path, chunk_size: int, timeout: float) -> None:
    """One attempt: continue ``part`` with a Range request, or restart it if the server sends it whole."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the partial file does not fit the remote one: start over
            err.close()
            part.unlink()
            return _fetch(url, part, chunk_size, timeout)
        raise
    with response:
        content_range = response.headers.get("Content-Range", "")
        resumed = response.status == 206 and re.match(rf"bytes {offset}-", content_range) is not None
        if response.status == 206 and not resumed:
            part.unlink()
            raise HTTPException(f"asked for bytes={offset}- but got range {content_range!r}")
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as out:
            start = offset if resumed else 0
            total = start + expected if expected is not None else None
            written = _copy(response, out, chunk_size, total, start)
    if expected is not None and written != expected:
        raise HTTPException(f"connection closed after {written} of {expected} bytes")


def download(
    url: str,
    dest: str | os.PathLike[str],
    checksum: str,
    *,
    chunk_size: int = 1 << 20,
    timeout: float = 60.0,
    retries: int = 5,
    backoff: float = 1.0,
) -> Path:
    """Download ``url`` to ``dest`` and verify its checksum (see :func:`parse_checksum`); return ``dest``.

    Data goes to ``<dest>.part`` and an interrupted transfer resumes from there
    (``Range: bytes=N-``; a server answering 200 restarts it). Failed attempts are
    retried ``retries`` times, waiting ``backoff * 2**k`` seconds. An existing
    ``dest`` with the right digest is kept without any request (one with a wrong
    digest is moved to ``<dest>.corrupt`` and fetched again). On a digest mismatch
    the download is moved to ``<dest>.corrupt`` and :class:`ChecksumError` is raised.
    """
    dest = Path(dest)
    algorithm, expected = parse_checksum(checksum)
    corrupt = dest.with_name(dest.name + ".corrupt")
    if dest.exists():
        if file_digest(dest, algorithm) == expected:
            return dest
        dest.replace(corrupt)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, chunk_size, timeout)
            break
        except urllib.error.HTTPError as err:
            if err.code < 500 or attempt == retries:
                raise DownloadError(f"downloading {url} failed: HTTP {err.code} {err.reason}") from err
        except (urllib.error.URLError, HTTPException, OSError) as err:
            if attempt == retries:
                raise DownloadError(f"downloading {url} failed after {retries + 1} attempts: {err}") from err
        time.sleep(backoff * 2**attempt)
    actual = file_digest(part, algorithm)
    if actual != expected:
        part.replace(corrupt)
        raise ChecksumError(url, corrupt, expected, actual)
    part.replace(dest)
    return dest


def extract_tar(archive: str | os.PathLike[str], dest_dir: str | os.PathLike[str]) -> Path:
    """Extract a (possibly compressed) tar into ``dest_dir``; return ``dest_dir``.

    Every member is checked with tarfile's ``"data"`` filter before anything is
    written, so absolute paths, ``..`` and links escaping ``dest_dir`` are refused
    (``ValueError`` naming the archive and member).
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            try:
                tarfile.data_filter(member, str(dest))
            except tarfile.FilterError as err:
                raise ValueError(f"refusing to extract {archive}: {err}") from err
        tar.extractall(dest, filter="data")
    return dest
