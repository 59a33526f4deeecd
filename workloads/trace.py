"""Page-access traces (docs/traces.md): the one home of the format, its writer and its streaming reader.

A trace is a fixed 56-byte header, a JSON map of metadata, and an xz (LZMA) stream of
records, one per access: ``varint((zigzag(page - previous page) << 1) | write)``,
then ``varint(compute_ns)`` when the header's flag says the trace carries compute
time.  Page numbers are page offsets in the traced program's enclave-like layout
(0 is its first page); repeats of one page are collapsed by the recorder, so two
records in a row name two different pages.

The reader streams: ``records()`` hands out decoded chunks (arrays), ``batches()``
[first, count] ranges of at most ``batch`` accesses, as workloads/patterns.py does; a
trace of millions of accesses never sits in memory as Python objects.  A file that is
not a trace, a newer version or a truncated body is a ``TraceError`` with one line
saying so.
"""

from __future__ import annotations

import json
import lzma
import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"EPCTRACE"
VERSION = 1
FLAG_COMPUTE = 1  # each record carries the compute time (ns) before its access
_HEADER = struct.Struct("<8sHHIQQQQQ")  # magic, version, flags, meta length, accesses, pages, writes, body, compute
HEADER_BYTES = _HEADER.size  # 56
MAX_META_BYTES = 1 << 20
CHUNK_BYTES = 1 << 15  # compressed bytes read at a time, and decompressed bytes handed out at a time
# xz, LZMA2 preset 6 with a 1 MiB dictionary: 30-48% smaller than zlib -9 on the bundled traces, as small
# as preset 6's 8 MiB dictionary within 0.7%, and a reader holds 1 MiB, not 8 (docs/traces.md)
XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 1 << 20}]
_MAX_VARINT_BYTES = 10


class TraceError(ValueError):
    """A file that cannot be read as a trace; its message is one line naming the file and what to do."""


@dataclass(frozen=True, slots=True)
class TraceHeader:
    """What a trace's header says: counts over the whole body, and its metadata (regions, command)."""

    version: int
    flags: int
    accesses: int
    pages: int  # highest page offset + 1: the enclave size the trace needs, in pages
    writes: int
    body_bytes: int  # the records' length, uncompressed
    compute_ns: int  # the sum of the records' compute times
    meta: dict[str, Any] = field(default_factory=dict)
    file_bytes: int = 0

    @property
    def has_compute(self) -> bool:
        return bool(self.flags & FLAG_COMPUTE)

    @property
    def regions(self) -> list[tuple[str, int, int]]:
        """(name, first page, pages) of the layout: code and data, heap, stack (see docs/traces.md)."""
        return [(str(n), int(f), int(c)) for n, f, c in self.meta.get("regions", [])]


def _zigzag(n: int) -> int:
    return n << 1 if n >= 0 else (-n << 1) - 1


def _varint(n: int, out: bytearray) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


class TraceWriter:
    """Writes a trace to ``path`` record by record; ``close()`` fills the header's counts in.

    Until then the header says nothing was written, so a writer that dies leaves a file the
    reader calls truncated.
    """

    def __init__(self, path: str | Path, *, compute: bool = False, meta: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.flags = FLAG_COMPUTE if compute else 0
        meta_bytes = json.dumps(meta or {}, sort_keys=True, separators=(",", ":")).encode()
        if len(meta_bytes) > MAX_META_BYTES:
            raise ValueError(f"trace metadata of {len(meta_bytes)} bytes: at most {MAX_META_BYTES}")
        self._meta = meta_bytes
        self._file: BinaryIO = open(self.path, "wb")  # noqa: SIM115 (closed in close())
        self._file.write(_HEADER.pack(MAGIC, VERSION, self.flags, len(meta_bytes), 0, 0, 0, 0, 0))
        self._file.write(meta_bytes)
        self._xz = lzma.LZMACompressor(lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=XZ_FILTERS)
        self._buf = bytearray()
        self._prev = 0
        self.accesses = self.pages = self.writes = self.body_bytes = self.compute_ns = 0

    def add(self, page: int, write: bool = False, compute_ns: int = 0) -> None:
        """One access to page offset ``page`` (>= 0), after ``compute_ns`` of compute (kept when the trace has it)."""
        if page < 0:
            raise ValueError(f"page offset {page} < 0")
        buf = self._buf
        _varint((_zigzag(page - self._prev) << 1) | bool(write), buf)
        if self.flags & FLAG_COMPUTE:
            if compute_ns < 0:
                raise ValueError(f"compute time {compute_ns} ns < 0")
            _varint(compute_ns, buf)
            self.compute_ns += compute_ns
        self._prev = page
        self.accesses += 1
        self.writes += bool(write)
        if page >= self.pages:
            self.pages = page + 1
        if len(buf) >= CHUNK_BYTES:
            self._flush()

    def _flush(self) -> None:
        self.body_bytes += len(self._buf)
        self._file.write(self._xz.compress(bytes(self._buf)))
        self._buf.clear()

    def close(self) -> None:
        if self._file.closed:
            return
        self._flush()
        self._file.write(self._xz.flush())
        self._file.seek(0)
        header = (MAGIC, VERSION, self.flags, len(self._meta), self.accesses, self.pages, self.writes)
        self._file.write(_HEADER.pack(*header, self.body_bytes, self.compute_ns))
        self._file.close()

    def abandon(self) -> None:
        """Close without finishing: the file stays a truncated trace (the caller may remove it)."""
        self._file.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abandon()


def read_header(path: str | Path) -> TraceHeader:
    """The header of the trace at ``path``; TraceError (one line) for a file that is not one or is newer."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _header(f, path)
    except OSError as e:
        raise TraceError(f"{path}: cannot read it: {e.strerror}") from None


def _header(f: BinaryIO, path: Path) -> TraceHeader:
    raw = f.read(HEADER_BYTES)
    if not raw.startswith(MAGIC[: len(raw)]) or not raw:
        raise TraceError(f"{path}: not an epc-playground trace (no EPCTRACE header); record one with `trace record`")
    if len(raw) < HEADER_BYTES:
        raise TraceError(f"{path}: truncated trace: its header is cut short ({len(raw)} of {HEADER_BYTES} bytes)")
    _magic, version, flags, meta_len, accesses, pages, writes, body, compute = _HEADER.unpack(raw)
    if version > VERSION:
        raise TraceError(
            f"{path}: trace version {version} is newer than this epc-playground reads ({VERSION}): update it"
        )
    if version < 1 or meta_len > MAX_META_BYTES or flags & ~FLAG_COMPUTE:
        raise TraceError(f"{path}: not an epc-playground trace (version {version}, flags {flags}: damaged header)")
    meta_raw = f.read(meta_len)
    if len(meta_raw) < meta_len:
        raise TraceError(f"{path}: truncated trace: its metadata is cut short")
    try:
        meta = json.loads(meta_raw) if meta_raw else {}
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise TraceError(f"{path}: not an epc-playground trace (its metadata is not a JSON map)")
    size = f.seek(0, 2)
    f.seek(HEADER_BYTES + meta_len)
    return TraceHeader(version, flags, accesses, pages, writes, body, compute, meta, size)


def _body(f: BinaryIO, path: Path, header: TraceHeader) -> Iterator[bytes]:
    """The body's bytes, decompressed piece by piece; TraceError when it is cut short or damaged."""
    unxz = lzma.LZMADecompressor(lzma.FORMAT_XZ)
    seen = 0
    while not unxz.eof:
        data = f.read(CHUNK_BYTES) if unxz.needs_input else b""
        if not data and unxz.needs_input:
            break
        try:
            out = unxz.decompress(data, CHUNK_BYTES)
        except lzma.LZMAError as e:
            raise TraceError(f"{path}: damaged trace body ({e}); record it again") from None
        seen += len(out)
        if seen > header.body_bytes:
            break
        if out:
            yield out
    if not unxz.eof or seen != header.body_bytes or unxz.unused_data or f.read(1):
        raise TraceError(
            f"{path}: truncated trace: its body ends after {seen} of the {header.body_bytes} bytes its header "
            "gives (a recording cut short?); record it again"
        )


def verify(path: str | Path) -> TraceHeader:
    """The header, once the whole body has been checked (decompressed, its length and CRC; C speed)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            header = _header(f, path)
            for _ in _body(f, path, header):
                pass
    except OSError as e:
        raise TraceError(f"{path}: cannot read it: {e.strerror}") from None
    return header


def replayable(path: str | Path) -> int:
    """The pages an enclave needs to replay the trace at ``path`` (its highest page + 1), once the whole
    file is checked (verify()); TraceError also for a trace with no accesses, which would replay nothing."""
    header = verify(path)
    if header.accesses == 0:
        raise TraceError(f"{path}: the trace has no accesses: there is nothing to replay")
    return header.pages


def records(path: str | Path) -> Iterator[tuple[array[int], array[int], array[int]]]:
    """The trace's accesses in order, a chunk at a time: (pages, writes 0/1, compute ns) arrays of equal
    length (compute all 0 when the trace has none).  TraceError when the file is not a whole trace
    (raised where the damage is found, possibly after some chunks)."""
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; a generator's with would hold it until collected)
    except OSError as e:
        raise TraceError(f"{path}: cannot read it: {e.strerror}") from None
    try:
        header = _header(f, path)
        compute = header.has_compute
        prev = 0
        left = b""
        count = 0
        for data in _body(f, path, header):
            buf = left + data if left else data
            pages, writes, times = array("q"), array("b"), array("q")
            i, end = 0, len(buf)
            while i < end:
                start = i
                word = buf[i]
                i += 1
                if word >= 0x80:  # a delta of 32 pages or more, or a long run of compute
                    word, i = _long_varint(buf, start)
                    if i < 0:
                        i = start
                        break
                ns = 0
                if compute:
                    if i >= end:
                        i = start
                        break
                    ns = buf[i]
                    i += 1
                    if ns >= 0x80:
                        ns, i = _long_varint(buf, i - 1)
                        if i < 0:
                            i = start
                            break
                zz = word >> 1
                prev += (zz >> 1) ^ -(zz & 1)
                pages.append(prev)
                writes.append(word & 1)
                times.append(ns)
            left = buf[i:]
            if len(left) > 2 * _MAX_VARINT_BYTES:
                raise TraceError(f"{path}: damaged trace body (a record longer than any); record it again")
            count += len(pages)
            if pages:
                if min(pages) < 0 or max(pages) >= header.pages:
                    raise TraceError(
                        f"{path}: damaged trace body (a page outside the {header.pages} its header gives); "
                        "record it again"
                    )
                yield pages, writes, times
        if left or count != header.accesses:
            raise TraceError(
                f"{path}: damaged trace body ({count} whole records, header says {header.accesses}); record it again"
            )
    finally:
        f.close()


def _long_varint(buf: bytes, i: int) -> tuple[int, int]:
    """The varint at ``buf[i]`` and the index after it; (0, -1) when the buffer ends inside it."""
    value = shift = 0
    end = len(buf)
    while i < end:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i
    return 0, -1


Ranges = list[list[int]]


def batches(path: str | Path, batch: int = 256) -> Iterator[tuple[Ranges, bool, int]]:
    """The trace in batches of at most ``batch`` accesses, as patterns.batches() gives them:
    ([first, count] ranges in access order, adjacent pages merged; whether any access of the
    batch writes; the batch's compute time in ns)."""
    ranges: Ranges = []
    n = ns = 0
    write = False
    for pages, writes, times in records(path):
        for k in range(len(pages)):
            page = pages[k]
            if ranges and ranges[-1][0] + ranges[-1][1] == page:
                ranges[-1][1] += 1
            else:
                ranges.append([page, 1])
            write = write or bool(writes[k])
            ns += times[k]
            n += 1
            if n == batch:
                yield ranges, write, ns
                ranges, n, ns, write = [], 0, 0, False
    if ranges:
        yield ranges, write, ns
