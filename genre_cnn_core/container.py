"""Where a music file keeps its audio, and whether its container adds up.

Tags live in known places: ID3v2 at the start of MP3 (and sometimes FLAC)
files; ID3v1, APEv2 and Lyrics3 at the end of MP3, WavPack, Monkey's Audio
and Musepack files; FLAC metadata blocks; the comment packet of Ogg
streams; the ``moov`` atom of MP4; ``LIST``/``id3 ``/``ID3 `` chunks of WAVE
and AIFF; the header object of ASF; the ID3 block at the end of DSF. The
audio payload is everything else that the decoder reads: MPEG frames, FLAC
frames, Ogg audio pages, ``mdat``, ``data``/``SSND``, the ASF data object.

:func:`audio_identity` digests the payload and the parameters that say how
to decode it (WAVE/AIFF/DSF format chunk, FLAC STREAMINFO, Ogg identification
header), so editing, adding or removing tags, moving, copying or touching a
file keeps its identity, and a new encoding, other audio or a different
length changes it. It reads the container's structure and a fixed number of
sampled chunks of the payload, never a whole large file.

:func:`container_problem` tells when a container's size fields disagree with
the file, the case in which a tagger appends its chunk where a decoder reads
audio, or inserts it in the middle of the audio.

Both only read, and only regular files (a FIFO named ``x.mp3`` would block
them); neither needs anything beyond the standard library.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

from .files import open_regular

#: A payload larger than ``_SAMPLES * _SAMPLE_BYTES`` is digested from this
#: many chunks at fixed relative positions (the first and the last included)
#: and its length; a smaller one is read whole.
_SAMPLES = 16
_SAMPLE_BYTES = 4096

#: A read of structure fetches this much, and the reads that follow nearby
#: are served from it.
_BLOCK_BYTES = 16384

#: 10 bytes: 20 hex characters.
_DIGEST_SIZE = 10

#: Bumped whenever the digest of some file would change, so identities of
#: two versions never meet.
_PERSON = b"cnngenre-audio1"

#: More chunks, atoms, blocks or tags in a row than any real file has: such
#: a chain is treated as malformed rather than walked to the end.
_MAX_CHAIN = 100_000

#: Ogg header packets are walked page by page; cover art in a comment
#: packet can span hundreds of pages, this many is beyond any real file.
_MAX_HEADER_PAGES = 20_000

#: The largest Ogg page: a 27-byte header, 255 lacing values, 255 * 255 bytes.
_MAX_OGG_PAGE = 27 + 255 + 255 * 255

_ASF_HEADER = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_ASF_DATA = bytes.fromhex("3626b2758e66cf11a6d900aa0062ce6c")

#: Atoms an MP4 file may start with.
_MP4_FIRST_ATOMS = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pdin", b"junk"}

#: MP4 atoms made of atoms, walked by :func:`container_problem` (``meta``
#: has 4 bytes of version and flags before its children).
_MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"udta", b"edts", b"dinf", b"meta", b"ilst"}


class _Malformed(Exception):
    """The container cannot be parsed; ``str(error)`` says where."""


class _Layout(NamedTuple):
    """Where a file's audio is.

    ``kind`` names the container (identities of different kinds never
    meet), ``params`` are the bytes that say how to decode the payload,
    ``spans`` its ``(offset, length)`` ranges in file order, and ``paged``
    is true for Ogg, whose pages carry sequence numbers and checksums that
    a tag edit rewrites.
    """

    kind: str
    params: bytes
    spans: tuple[tuple[int, int], ...]
    paged: bool = False


def audio_identity(path) -> str:
    """A digest of a file's audio that its tags and its location leave alone.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    str
        20 hex characters. Equal for a file before and after any tag edit
        (adding, growing, shrinking or removing tags, with or without
        padding), a move, a copy or a new modification time; different
        after a new encoding, other audio, truncation or a change of
        length. A file of a format not recognised is taken for a stream
        between ID3v2 tags at its start and ID3v1, APEv2 or Lyrics3 tags
        at its end, as MPEG audio, WavPack, Monkey's Audio and Musepack
        are, and a file whose container is too damaged to parse is
        digested whole (sampled, with its size): tags kept anywhere else
        in them change their identity.

    Raises
    ------
    OSError
        When the file cannot be opened or read; :class:`genre_cnn_core.files.
        NotRegularFile` when it is a FIFO, a device or a folder (never opened
        for reading: a FIFO would block).

    Notes
    -----
    The payload is sampled: a change of a few bytes between sampled chunks
    of a large payload, keeping its length, goes unnoticed.
    """
    with open_regular(path) as file:
        handle = _Reader(file)
        return _digest(handle, _audio_layout(handle))


def payload_bytes(path) -> int:
    """Bytes of a file's audio payload (what :func:`audio_identity` digests); the file's size
    when its container cannot be parsed.

    Raises
    ------
    OSError
        As :func:`audio_identity`.
    """
    with open_regular(path) as file:
        return sum(length for _, length in _audio_layout(_Reader(file)).spans)


def _audio_layout(handle) -> _Layout:
    """Where a file's audio payload lies; the whole file when its container cannot be parsed."""
    try:
        return _layout(handle, handle.size)
    except (_Malformed, ValueError, OverflowError, IndexError):
        return _Layout("file", b"", ((0, handle.size),))


def container_problem(path) -> str | None:
    """Why writing tags to a file would be unsafe, or None.

    Checks the size fields of WAVE (RIFF, RF64), AIFF/AIFC, MP4, FLAC, ASF
    and DSF containers and of a leading ID3v2 tag against the file: a
    tagger trusts them to find where to put its tags, so a ``data`` chunk
    claiming more bytes than the file holds makes the appended tag chunk
    decode as audio, and a RIFF size short of the file makes the tag chunk
    land inside the audio.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    str or None
        A one-line reason when the container is inconsistent; None when it
        is consistent or is not one of those checked (Ogg, MPEG streams).

    Raises
    ------
    OSError
        When the file cannot be opened or read.
    """
    with open_regular(path) as file:
        handle = _Reader(file)
        try:
            return _problem(handle, handle.size)
        except (ValueError, OverflowError, IndexError):
            return "the container cannot be parsed"


# -- Reading ---------------------------------------------------------------


class _Reader:
    """An open file, its size, which bounds every read, and its last block read.

    Structure is read a few bytes at a time (a chunk header, then the next),
    mostly close together: a short read fetches a block and the reads that
    follow nearby are served from it.
    """

    __slots__ = ("block", "block_offset", "file", "size")

    def __init__(self, file):
        self.file = file
        self.size = os.fstat(file.fileno()).st_size
        self.block, self.block_offset = b"", 0


def _read_at(handle: _Reader, offset: int, length: int) -> bytes:
    """Up to ``length`` bytes at ``offset``, through the block; nothing outside the file."""
    if offset < 0 or length <= 0 or offset >= handle.size:
        return b""
    length = min(length, handle.size - offset)
    start = offset - handle.block_offset
    if 0 <= start and start + length <= len(handle.block):
        return handle.block[start:start + length]
    if length > _BLOCK_BYTES:
        return _read_direct(handle, offset, length)
    handle.block, handle.block_offset = _read_direct(handle, offset, _BLOCK_BYTES), offset
    return handle.block[:length]


def _read_direct(handle: _Reader, offset: int, length: int) -> bytes:
    """Up to ``length`` bytes at ``offset``, bypassing the block; nothing outside the file.

    Offsets come from the file's own size fields: one far past the end is
    refused by some file systems' seek.
    """
    if offset < 0 or length <= 0 or offset >= handle.size:
        return b""
    handle.file.seek(offset)
    return handle.file.read(min(length, handle.size - offset))


def _le(data: bytes) -> int:
    return int.from_bytes(data, "little")


def _be(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _syncsafe(data: bytes) -> int:
    """An ID3 size: 7 bits in each of 4 bytes."""
    value = 0
    for byte in data:
        value = (value << 7) | (byte & 0x7F)
    return value


# -- Layouts ---------------------------------------------------------------


def _layout(handle, size: int) -> _Layout:
    """The layout of a file, by its first bytes (never by its name)."""
    head = _read_at(handle, 0, 16)
    if head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return _wave_layout(handle, size, head)
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return _aiff_layout(handle, size)
    if head[:4] == b"OggS":
        return _ogg_layout(handle, size)
    if head[:16] == _ASF_HEADER:
        return _asf_layout(handle, size)
    if head[:4] == b"DSD ":
        return _dsf_layout(handle, size)
    if head[4:8] in _MP4_FIRST_ATOMS:
        return _mp4_layout(handle, size)
    start = _skip_id3v2(handle, size)
    if _read_at(handle, start, 4) == b"fLaC":
        return _flac_layout(handle, size, start)
    # MPEG audio, ADTS, WavPack, Monkey's Audio, Musepack, TTA and anything
    # else: a stream between the tags at either end.
    end = _strip_trailing_tags(handle, start, size)
    return _Layout("stream", b"", ((start, end - start),))


def _skip_id3v2(handle, size: int) -> int:
    """Offset after the ID3v2 tags at the start of a file (0 when none)."""
    offset = 0
    for _ in range(_MAX_CHAIN):
        header = _read_at(handle, offset, 10)
        if (len(header) < 10 or header[:3] != b"ID3" or header[3] == 0xFF or header[4] == 0xFF
                or any(byte & 0x80 for byte in header[6:10])):
            return offset
        footer = 10 if header[3] == 4 and header[5] & 0x10 else 0
        end = offset + 10 + _syncsafe(header[6:10]) + footer
        if end > size:
            raise _Malformed(f"the ID3v2 tag claims {end - offset} bytes, beyond the end of the file")
        offset = end
    raise _Malformed("too many ID3v2 tags")


def _strip_trailing_tags(handle, start: int, end: int) -> int:
    """Where the payload ends before ID3v1, APEv2, Lyrics3 and appended ID3v2 tags."""
    for _ in range(_MAX_CHAIN):
        room = end - start
        if room >= 128 and _read_at(handle, end - 128, 3) == b"TAG":
            end -= 128
            if end - start >= 227 and _read_at(handle, end - 227, 4) == b"TAG+":
                end -= 227
            continue
        footer = _read_at(handle, end - 32, 32) if room >= 32 else b""
        if footer[:8] == b"APETAGEX":
            tag_size = _le(footer[12:16])
            total = tag_size + (32 if _le(footer[20:24]) & 0x80000000 else 0)
            if 32 <= tag_size and total <= room:
                end -= total
                continue
        trailer = _read_at(handle, end - 15, 15) if room >= 15 else b""
        if trailer[6:] == b"LYRICS200" and trailer[:6].isdigit():
            begin = end - 15 - int(trailer[:6])
            if begin >= start and _read_at(handle, begin, 11) == b"LYRICSBEGIN":
                end = begin
                continue
        if trailer[6:] == b"LYRICSEND":
            window_start = max(start, end - 5100 - 9)
            found = _read_at(handle, window_start, end - 9 - window_start).rfind(b"LYRICSBEGIN")
            if found >= 0:
                end = window_start + found
                continue
        footer = _read_at(handle, end - 10, 10) if room >= 10 else b""
        if footer[:3] == b"3DI" and not any(byte & 0x80 for byte in footer[6:10]):
            total = _syncsafe(footer[6:10]) + 20
            if total <= room and _read_at(handle, end - total, 3) == b"ID3":
                end -= total
                continue
        return end
    raise _Malformed("too many trailing tags")


def _flac_blocks(handle, size: int, start: int):
    """``(type, body offset, length)`` of each FLAC metadata block after ``fLaC``."""
    offset = start + 4
    for _ in range(_MAX_CHAIN):
        header = _read_at(handle, offset, 4)
        if len(header) < 4:
            raise _Malformed("the FLAC metadata blocks run past the end of the file")
        length = _be(header[1:4])
        if offset + 4 + length > size:
            raise _Malformed(f"FLAC metadata block of type {header[0] & 0x7F} runs past the end of the file")
        yield header[0] & 0x7F, offset + 4, length
        offset += 4 + length
        if header[0] & 0x80:
            return
    raise _Malformed("too many FLAC metadata blocks")


def _flac_layout(handle, size: int, start: int) -> _Layout:
    streaminfo = None
    frames = start + 4
    for block_type, body, length in _flac_blocks(handle, size, start):
        if streaminfo is None:
            if block_type != 0:
                raise _Malformed("the first FLAC metadata block is not STREAMINFO")
            # mutagen writes STREAMINFO back field by field, to the same bytes.
            streaminfo = _read_at(handle, body, min(length, 64))
        frames = body + length
    end = _strip_trailing_tags(handle, frames, size)
    return _Layout("flac", streaminfo, ((frames, end - frames),))


def _iff_chunks(handle, offset: int, limit: int, little_endian: bool):
    """``(id, body offset, declared length)`` of the chunks from ``offset`` to ``limit``."""
    for _ in range(_MAX_CHAIN):
        header = _read_at(handle, offset, 8)
        if offset + 8 > limit or len(header) < 8:
            return
        length = _le(header[4:8]) if little_endian else _be(header[4:8])
        yield header[:4], offset + 8, length
        offset += 8 + length + (length & 1)
    raise _Malformed("too many chunks")


def _wave_layout(handle, size: int, head: bytes) -> _Layout:
    fmt = data = data64 = None
    for chunk_id, body, length in _iff_chunks(handle, 12, size, head[:4] != b"RIFX"):
        if chunk_id == b"ds64" and length >= 24:
            data64 = _le(_read_at(handle, body + 8, 8))
        elif chunk_id == b"fmt " and fmt is None:
            fmt = _read_at(handle, body, min(length, 256))
        elif chunk_id == b"data" and data is None:
            if length == 0xFFFFFFFF and data64 is not None:
                length = data64
            data = (body, max(0, min(length, size - body)))
        if fmt is not None and data is not None:
            return _Layout("wave", fmt, (data,))
    raise _Malformed("no 'fmt ' and 'data' chunks")


def _aiff_layout(handle, size: int) -> _Layout:
    comm = ssnd = None
    for chunk_id, body, length in _iff_chunks(handle, 12, size, little_endian=False):
        if chunk_id == b"COMM" and comm is None:
            comm = _read_at(handle, body, min(length, 256))
        elif chunk_id == b"SSND" and ssnd is None:
            ssnd = (body, max(0, min(length, size - body)))
        if comm is not None and ssnd is not None:
            return _Layout("aiff", comm, (ssnd,))
    raise _Malformed("no 'COMM' and 'SSND' chunks")


def _mp4_atoms(handle, offset: int, limit: int, parent: str = "the file"):
    """``(name, body offset, end)`` of the atoms from ``offset`` to ``limit`` (the end of ``parent``)."""
    for _ in range(_MAX_CHAIN):
        if offset + 8 > limit:
            return
        header = _read_at(handle, offset, 16)
        if len(header) < 8:
            return
        length, header_size = _be(header[:4]), 8
        if length == 1:
            if len(header) < 16:
                raise _Malformed("an MP4 atom's 64-bit size is cut off")
            length, header_size = _be(header[8:16]), 16
        elif length == 0:  # up to the end
            length = limit - offset
        name = header[4:8]
        if length < header_size:
            raise _Malformed(f"MP4 atom {name.decode('latin-1')!r} has an impossible size ({length})")
        if offset + length > limit:
            raise _Malformed(f"MP4 atom {name.decode('latin-1')!r} claims {length} bytes, beyond the end of {parent}")
        yield name, offset + header_size, offset + length
        offset += length
    raise _Malformed("too many MP4 atoms")


def _mp4_layout(handle, size: int) -> _Layout:
    # A moov cut off by truncation makes the file undecodable though mdat
    # is whole: _mp4_atoms raises, and the file is digested whole.
    spans = tuple((body, end - body) for name, body, end in _mp4_atoms(handle, 0, size) if name == b"mdat")
    if not spans:
        raise _Malformed("no 'mdat' atom")
    return _Layout("mp4", b"", spans)


def _sized_chunks(handle, id_length: int, limit: int, what: str, too_many: str | None = None):
    """``(id, body offset, declared size)`` of consecutive chunks whose header is an id of
    ``id_length`` bytes and a little-endian 8-byte size that counts the header too (ASF, DSF).

    After ``limit`` chunks the walk stops, or raises ``too_many`` when given (a format whose
    chain must end by itself).
    """
    header_length, offset = id_length + 8, 0
    for _ in range(limit):
        header = _read_at(handle, offset, header_length)
        if len(header) < header_length:
            return
        length = _le(header[id_length:])
        if length < header_length:
            raise _Malformed(f"{what} has an impossible size")
        yield header[:id_length], offset + header_length, length
        offset += length
    if too_many:
        raise _Malformed(too_many)


def _asf_objects(handle, size: int):
    """ASF's top-level objects (a 16-byte GUID, then the size)."""
    return _sized_chunks(handle, 16, _MAX_CHAIN, "an ASF object", "too many ASF objects")


def _asf_layout(handle, size: int) -> _Layout:
    for guid, body, length in _asf_objects(handle, size):
        if guid == _ASF_DATA:
            return _Layout("asf", b"", ((body, max(0, min(length - 24, size - body))),))
    raise _Malformed("no ASF data object")


def _dsf_chunks(handle, size: int):
    """The DSF chunks ("DSD ", "fmt ", "data"; a 4-byte id, then the size)."""
    return _sized_chunks(handle, 4, 3, "a DSF chunk")


def _dsf_layout(handle, size: int) -> _Layout:
    fmt = None
    for chunk_id, body, length in _dsf_chunks(handle, size):
        if chunk_id == b"fmt ":
            fmt = _read_at(handle, body, min(length - 12, 256))
        elif chunk_id == b"data" and fmt is not None:
            return _Layout("dsf", fmt, ((body, max(0, min(length - 12, size - body))),))
    raise _Malformed("no DSF 'fmt ' and 'data' chunks")


# -- Ogg -------------------------------------------------------------------


class _Page(NamedTuple):
    offset: int
    header: bytes  # the 27 fixed bytes and the lacing values
    payload: int  # bytes of packet data after the header

    @property
    def end(self) -> int:
        return self.offset + len(self.header) + self.payload

    @property
    def serial(self) -> bytes:
        return self.header[14:18]

    @property
    def lacing(self) -> bytes:
        return self.header[27:]


def _ogg_page(handle, offset: int) -> _Page | None:
    """The page whose capture pattern is at ``offset``, or None."""
    fixed = _read_at(handle, offset, 27)
    if len(fixed) < 27 or fixed[:4] != b"OggS" or fixed[4] != 0 or fixed[5] & ~0x07:
        return None
    lacing = _read_at(handle, offset + 27, fixed[26])
    if len(lacing) < fixed[26]:
        return None
    return _Page(offset, fixed + lacing, sum(lacing))


def _ogg_header_count(packet: bytes) -> int:
    """How many header packets a logical stream starts with, from its first packet."""
    if packet.startswith((b"\x01vorbis", b"\x80theora")):
        return 3
    if packet.startswith(b"OpusHead"):
        return 2
    if packet.startswith(b"\x7fFLAC") and len(packet) >= 9 and _be(packet[7:9]):
        return 1 + _be(packet[7:9])
    if packet.startswith(b"Speex   ") and len(packet) >= 72:
        return 2 + _le(packet[68:72])
    raise _Malformed("unknown Ogg codec")


def _ogg_layout(handle, size: int) -> _Layout:
    """Audio pages of an Ogg file: everything after the first stream's header packets.

    mutagen repaginates the header packets when the comment packet changes
    size and then renumbers every following page of the stream, rewriting
    their sequence numbers and checksums; the pages' sizes and everything
    else in them stay as they were.
    """
    first = _ogg_page(handle, 0)
    if first is None or first.end > size:
        raise _Malformed("the first Ogg page is cut off")
    first_length = 0
    for value in first.lacing:
        first_length += value
        if value < 255:
            break
    else:
        raise _Malformed("the Ogg identification header spans pages")
    ident = _read_at(handle, first.offset + len(first.header), min(first_length, 4096))
    wanted = _ogg_header_count(ident)
    page, done = first, 0
    for _ in range(_MAX_HEADER_PAGES):
        if page.serial == first.serial:
            done += sum(1 for value in page.lacing if value < 255)
        if done >= wanted:
            return _Layout("ogg", ident, ((page.end, size - page.end),), paged=True)
        page = _ogg_page(handle, page.end)
        if page is None or page.end > size:
            raise _Malformed("the Ogg header pages are cut off")
    raise _Malformed("too many Ogg header pages")


def _next_ogg_page(handle, offset: int, end: int) -> _Page | None:
    """The first whole page at or after ``offset``, found by its capture pattern.

    A candidate counts only if another page or the end of the file follows
    it, so the pattern turning up by chance inside packet data is passed by.
    """
    searched = 0
    # Pages are contiguous, so one starts within a page's length of anywhere;
    # most are a few KiB, so a short window usually finds one.
    for window_size in (_BLOCK_BYTES, _MAX_OGG_PAGE + 4):
        window = _read_at(handle, offset, min(end - offset, window_size))
        found = window.find(b"OggS", max(0, searched - 3))
        while found >= 0:
            page = _ogg_page(handle, offset + found)
            if page is not None and (page.end == end
                                     or (page.end < end and _read_at(handle, page.end, 4) == b"OggS")):
                return page
            found = window.find(b"OggS", found + 1)
        searched = len(window)
    return None


def _digest_ogg_pages(digest, handle, start: int, length: int) -> None:
    """Feed sampled pages to ``digest``, less their sequence numbers and checksums."""
    end = start + length
    if length <= _SAMPLES * _SAMPLE_BYTES:
        targets, pages_per_target, page_bytes = [start], _MAX_CHAIN, _MAX_OGG_PAGE
    else:
        targets = [start + i * length // _SAMPLES for i in range(_SAMPLES)]
        pages_per_target, page_bytes = 1, _SAMPLE_BYTES
    for target in targets:
        page = _next_ogg_page(handle, target, end)
        for _ in range(pages_per_target):
            if page is None:
                digest.update(b"-")
                break
            digest.update((page.offset - start).to_bytes(8, "little"))
            digest.update(page.header[4:18])  # version, flags, granule position, serial number
            digest.update(page.header[26:])  # the lacing values
            digest.update(_read_at(handle, page.offset + len(page.header), min(page.payload, page_bytes)))
            if page.end >= end:
                break
            page = _ogg_page(handle, page.end)


# -- Digest ----------------------------------------------------------------


def _digest(handle, layout: _Layout) -> str:
    digest = hashlib.blake2b(digest_size=_DIGEST_SIZE, person=_PERSON)
    digest.update(layout.kind.encode("ascii") + b"\0")
    digest.update(len(layout.params).to_bytes(4, "little") + layout.params)
    total = sum(length for _, length in layout.spans)
    digest.update(total.to_bytes(8, "little"))
    if layout.paged:
        (start, length), = layout.spans
        _digest_ogg_pages(digest, handle, start, length)
    elif total <= _SAMPLES * _SAMPLE_BYTES:
        for offset, length in layout.spans:
            digest.update(_read_direct(handle, offset, length))
    else:
        for i in range(_SAMPLES):
            digest.update(_read_spans(handle, layout.spans, i * (total - _SAMPLE_BYTES) // (_SAMPLES - 1),
                                      _SAMPLE_BYTES))
    return digest.hexdigest()


def _read_spans(handle, spans, position: int, length: int) -> bytes:
    """``length`` bytes from ``position`` of the spans laid end to end."""
    parts = []
    for offset, span in spans:
        if position >= span:
            position -= span
            continue
        take = min(length, span - position)
        parts.append(_read_direct(handle, offset + position, take))
        length -= take
        position = 0
        if length <= 0:
            break
    return b"".join(parts)


# -- Problems --------------------------------------------------------------


def _problem(handle, size: int) -> str | None:
    head = _read_at(handle, 0, 16)
    try:
        if head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and head[8:12] == b"WAVE":
            return _iff_problem(handle, size, head, "RIFF", b"data", head[:4] != b"RIFX")
        if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            return _iff_problem(handle, size, head, "FORM", b"SSND", little_endian=False)
        if head[:16] == _ASF_HEADER:
            return _asf_problem(handle, size)
        if head[:4] == b"DSD ":
            return _dsf_problem(handle, size)
        if head[4:8] in _MP4_FIRST_ATOMS:
            return _mp4_problem(handle, 0, size, depth=0)
        start = _skip_id3v2(handle, size)
        if _read_at(handle, start, 4) == b"fLaC":
            blocks = list(_flac_blocks(handle, size, start))
            if blocks[0][0] != 0:
                return "the first FLAC metadata block is not STREAMINFO"
    except _Malformed as error:
        return str(error)
    return None


def _iff_problem(handle, size: int, head: bytes, form: str, audio_id: bytes, little_endian: bool) -> str | None:
    """Size fields of a RIFF or FORM file that disagree with the file."""
    declared = _le(head[4:8]) if little_endian else _be(head[4:8])
    data64 = None
    if head[:4] in (b"RF64", b"BW64"):
        ds64 = _read_at(handle, 12, 36)
        if ds64[:4] != b"ds64" or len(ds64) < 36:
            return f"{head[:4].decode()} file without a 'ds64' chunk"
        form, declared, data64 = head[:4].decode(), _le(ds64[8:16]), _le(ds64[16:24])
    if abs(declared + 8 - size) > 1:  # one pad byte either way is common and harmless
        return f"the {form} size field says {declared + 8} bytes but the file holds {size}"
    found = False
    for chunk_id, body, length in _iff_chunks(handle, 12, size, little_endian):
        if chunk_id == audio_id:
            found = True
            if length == 0xFFFFFFFF and data64 is not None:
                length = data64  # the real size is in ds64
        if body + length > size:
            name = chunk_id.decode("latin-1")
            if chunk_id == audio_id:
                return f"the {name!r} chunk claims {length} bytes but only {size - body} remain in the file"
            return f"chunk {name!r} runs past the end of the file"
    if not found:
        return f"no {audio_id.decode()!r} chunk"
    return None


def _mp4_problem(handle, offset: int, limit: int, depth: int, parent: str = "the file") -> str | None:
    for name, body, end in _mp4_atoms(handle, offset, limit, parent):
        if name in _MP4_CONTAINERS and depth < 8:
            problem = _mp4_problem(handle, body + (4 if name == b"meta" else 0), end, depth + 1,
                                   f"its parent {name.decode('latin-1')!r}")
            if problem:
                return problem
    return None


def _asf_problem(handle, size: int) -> str | None:
    for guid, body, length in _asf_objects(handle, size):
        if body - 24 + length > size:
            which = "header" if guid == _ASF_HEADER else "data" if guid == _ASF_DATA else "an"
            return f"the ASF {which} object claims {length} bytes, beyond the end of the file"
    return None


def _dsf_problem(handle, size: int) -> str | None:
    header = _read_at(handle, 0, 28)
    if len(header) < 28:
        return "the DSF header is cut off"
    if _le(header[12:20]) != size:
        return f"the DSF header says {_le(header[12:20])} bytes but the file holds {size}"
    if _le(header[20:28]) > size:
        return "the DSF metadata pointer points past the end of the file"
    for chunk_id, body, length in _dsf_chunks(handle, size):
        if body - 12 + length > size:
            return f"the DSF {chunk_id.decode('latin-1')!r} chunk runs past the end of the file"
    return None
