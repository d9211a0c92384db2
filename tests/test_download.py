"""Resumable, verified downloads against a local Range-capable HTTP server (127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sensitivity.datasets import (
    ChecksumError,
    DownloadError,
    download,
    extract_tar,
    file_sha256,
    parse_checksum,
    verify_checksum,
    verify_sha256,
)

FAST = {"timeout": 5.0, "retries": 2, "backoff": 0.0, "chunk_size": 4096}


@dataclass
class Remote:
    """What the test server serves and how it misbehaves; ``requests`` logs ``(path, Range)``."""

    payload: bytes = b""
    ignore_range: bool = False
    drop_first: bool = False
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep the test output quiet
        pass

    def do_GET(self) -> None:
        remote = self.server.remote  # type: ignore[attr-defined]
        header = self.headers.get("Range")
        remote.requests.append((self.path, header))
        if self.path != "/data.tar":
            self.send_error(404)
            return
        data, start = remote.payload, 0
        match = re.fullmatch(r"bytes=(\d+)-", header or "")
        if match and not remote.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if remote.drop_first and len(remote.requests) == 1:
            body = body[: len(body) // 2]  # promise everything, send half, hang up
        self.wfile.write(body)


@pytest.fixture
def archive_bytes() -> bytes:
    """A small tar.gz with a nested file, built in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in (("set/a.txt", b"hello\n"), ("set/sub/b.bin", bytes(range(256)) * 400)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@pytest.fixture
def remote(archive_bytes: bytes) -> Iterator[Remote]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.remote = Remote(payload=archive_bytes)  # type: ignore[attr-defined]
    server.remote.url = f"http://127.0.0.1:{server.server_address[1]}/data.tar"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.remote  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verify_and_extract(tmp_path: Path, remote: Remote) -> None:
    dest = download(remote.url, tmp_path / "dl" / "data.tar.gz", sha(remote.payload).upper(), **FAST)
    assert dest.read_bytes() == remote.payload
    assert verify_sha256(dest, sha(remote.payload)) and file_sha256(dest) == sha(remote.payload)
    assert not verify_sha256(dest, sha(b"other"))
    assert remote.requests == [("/data.tar", None)]
    assert not dest.with_name("data.tar.gz.part").exists()
    out = extract_tar(dest, tmp_path / "out")
    assert (out / "set" / "a.txt").read_bytes() == b"hello\n"
    assert (out / "set" / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 400


def test_md5_checksum_as_published_for_voc(tmp_path: Path, remote: Remote) -> None:
    """PASCAL VOC publishes MD5 digests: "md5:<hex>" is verified with MD5, and a wrong one is caught."""
    md5 = hashlib.md5(remote.payload).hexdigest()
    dest = download(remote.url, tmp_path / "voc.tar", f"md5:{md5}", **FAST)
    assert verify_checksum(dest, f"md5:{md5}") and not verify_checksum(dest, "md5:" + "0" * 32)
    with pytest.raises(ChecksumError, match="md5|" + "1" * 32):
        download(remote.url, tmp_path / "other.tar", "md5:" + "1" * 32, **FAST)
    assert parse_checksum("SHA256:" + "A" * 64) == ("sha256", "a" * 64)
    for bad in ("md5:abc", "crc32:" + "0" * 8, "0" * 63):
        with pytest.raises(ValueError, match="checksum"):
            parse_checksum(bad)


def test_checksum_mismatch_moves_file_aside(tmp_path: Path, remote: Remote) -> None:
    dest = tmp_path / "data.tar.gz"
    wrong = sha(b"something else")
    with pytest.raises(ChecksumError) as info:
        download(remote.url, dest, wrong, **FAST)
    err = info.value
    assert not dest.exists() and not dest.with_name("data.tar.gz.part").exists()
    corrupt = tmp_path / "data.tar.gz.corrupt"
    assert corrupt.read_bytes() == remote.payload and err.path == corrupt
    for part in (remote.url, str(corrupt), wrong, sha(remote.payload)):
        assert part in str(err)


def test_resume_from_partial_file(tmp_path: Path, remote: Remote) -> None:
    dest, half = tmp_path / "data.tar.gz", len(remote.payload) // 2
    (tmp_path / "data.tar.gz.part").write_bytes(remote.payload[:half])
    download(remote.url, dest, sha(remote.payload), **FAST)
    assert remote.requests == [("/data.tar", f"bytes={half}-")]
    assert dest.read_bytes() == remote.payload


def test_dropped_connection_is_retried_and_resumed(tmp_path: Path, remote: Remote) -> None:
    remote.drop_first = True
    dest = download(remote.url, tmp_path / "data.tar.gz", sha(remote.payload), **FAST)
    assert dest.read_bytes() == remote.payload
    assert len(remote.requests) == 2 and remote.requests[0][1] is None
    assert remote.requests[1][1] == f"bytes={len(remote.payload) // 2}-"


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path, remote: Remote) -> None:
    remote.ignore_range = True
    (tmp_path / "data.tar.gz.part").write_bytes(b"stale partial bytes")
    dest = download(remote.url, tmp_path / "data.tar.gz", sha(remote.payload), **FAST)
    assert remote.requests == [("/data.tar", "bytes=19-")]
    assert dest.read_bytes() == remote.payload


def test_partial_file_longer_than_remote_starts_over(tmp_path: Path, remote: Remote) -> None:
    (tmp_path / "data.tar.gz.part").write_bytes(remote.payload + b"junk")
    dest = download(remote.url, tmp_path / "data.tar.gz", sha(remote.payload), **FAST)
    assert [r[1] for r in remote.requests] == [f"bytes={len(remote.payload) + 4}-", None]
    assert dest.read_bytes() == remote.payload


def test_existing_good_file_is_not_downloaded_again(tmp_path: Path, remote: Remote) -> None:
    dest = tmp_path / "data.tar.gz"
    dest.write_bytes(remote.payload)
    assert download(remote.url, dest, sha(remote.payload), **FAST) == dest
    assert remote.requests == []


def test_existing_bad_file_is_replaced(tmp_path: Path, remote: Remote) -> None:
    dest = tmp_path / "data.tar.gz"
    dest.write_bytes(b"truncated")
    download(remote.url, dest, sha(remote.payload), **FAST)
    assert dest.read_bytes() == remote.payload
    assert (tmp_path / "data.tar.gz.corrupt").read_bytes() == b"truncated"


def test_http_errors_and_bad_digest(tmp_path: Path, remote: Remote) -> None:
    with pytest.raises(DownloadError, match="404"):
        download(remote.url.replace("data.tar", "nope"), tmp_path / "x", sha(b""), **FAST)
    assert len(remote.requests) == 1  # a 404 is not retried
    with pytest.raises(ValueError, match="not a checksum"):
        download(remote.url, tmp_path / "x", "abc", **FAST)


def test_unreachable_server_gives_up_after_retries(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match="3 attempts"):
        download(f"http://127.0.0.1:{port}/data.tar", tmp_path / "x", sha(b""), **FAST)
    assert not (tmp_path / "x").exists()


def test_extract_rejects_members_escaping_the_destination(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        for name in ("ok.txt", "../escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(ValueError, match=r"evil\.tar"):
        extract_tar(evil, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out" / "ok.txt").exists()
