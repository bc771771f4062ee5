"""Read a recorded bag (:mod:`handover.runtime.recorder`) record by record, tolerant of a crash.

Uses the ``mcap`` library's stream reader and ``mcap-ros2-support``'s CDR decoder (not the writer's
library), so a bag whose recorder was killed (no summary, no footer, no ``metadata.yaml``) is read up
to its last complete chunk. A bag that ends inside a record (a truncated copy) or holds a corrupt
record is an :class:`~handover.runtime.errors.InputError` that says how much was readable (messages,
seconds of log time, bytes).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from handover.runtime.errors import InputError


@dataclass
class BagMessage:
    topic: str
    log_time_ns: int
    msg: object  # the decoded message (attribute access like the ROS message)


@dataclass
class Bag:
    """The decoded messages of a bag, in file order. ``complete``: the recorder closed it (footer
    present); False after a crash (the messages up to the last flushed chunk)."""

    path: Path
    messages: list[BagMessage] = field(default_factory=list)
    complete: bool = False
    types: dict = field(default_factory=dict)  # topic -> message type of every channel read (wanted or not)

    def topic(self, name: str) -> list[BagMessage]:
        return [m for m in self.messages if m.topic == name]

    @property
    def span_s(self) -> float:
        """Log time covered, s."""
        if not self.messages:
            return 0.0
        t = [m.log_time_ns for m in self.messages]
        return (max(t) - min(t)) * 1e-9


def mcap_file(path) -> Path:
    """The ``.mcap`` file of a bag folder (or ``path`` itself if it is a ``.mcap`` file)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: bag not found")
    if p.is_file():
        if p.suffix != ".mcap":
            raise InputError(f"{p}: expected a rosbag2 bag folder or an .mcap file")
        return p
    files = sorted(p.glob("*.mcap"))
    if not files:
        raise InputError(f"{p}: no .mcap file in the bag folder (recorded with MCAP storage?)")
    if len(files) > 1:
        raise InputError(f"{p}: {len(files)} .mcap files (a split bag): replay one of them, e.g. {files[0]}")
    return files[0]


def _complete_prefix(f: Path) -> tuple[int, int]:
    """(bytes of whole top-level records from the start, file size): the file's records are an
    opcode (1 byte) and a length (8 bytes, little endian) before each body."""
    import struct

    size = f.stat().st_size
    with open(f, "rb") as s:
        if s.read(8) != b"\x89MCAP0\r\n":
            raise InputError(f"{f}: not an MCAP file (bad magic); readable: nothing")
        pos = 8
        while pos + 9 <= size:
            s.seek(pos + 1)
            (n,) = struct.unpack("<Q", s.read(8))
            if pos + 9 + n > size:
                break
            pos += 9 + n
            if pos + 8 == size:  # the closing magic after the footer
                return size, size
    return pos, size


class _Prefix(io.RawIOBase):
    """The first ``size`` bytes of file ``path``, read as a stream (the reader stops at the last whole record)."""

    def __init__(self, path: Path, size: int):
        self._file, self._left = open(path, "rb"), size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._file.readinto(memoryview(buffer)[:max(self._left, 0)])
        self._left -= n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def read_bag(path, topics=None) -> Bag:
    """Every message of the bag at ``path`` (folder or .mcap), decoded; only ``topics`` if given.
    The file is streamed (a bag of camera images may not fit in memory); only the decoded messages
    of the wanted topics are kept."""
    from mcap.exceptions import EndOfFile
    from mcap.records import Channel, Footer, Message, Schema
    from mcap.stream_reader import StreamReader
    from mcap_ros2.decoder import DecoderFactory

    f = mcap_file(path)
    good, size = _complete_prefix(f)
    bag = Bag(Path(path))
    schemas, channels, decoders = {}, {}, {}
    factory = DecoderFactory()
    wanted = None if topics is None else set(topics)
    problem = "" if good == size else f"the file ends inside a record after {good} of {size} bytes"
    with io.BufferedReader(_Prefix(f, good), buffer_size=1 << 20) as stream:
        try:
            for record in StreamReader(stream, skip_magic=False, emit_chunks=False, validate_crcs=True).records:
                if isinstance(record, Schema):
                    schemas[record.id] = record
                elif isinstance(record, Channel):
                    channels[record.id] = record
                    schema = schemas.get(record.schema_id)
                    bag.types[record.topic] = schema.name if schema is not None else "?"
                elif isinstance(record, Message):
                    ch = channels[record.channel_id]
                    if wanted is not None and ch.topic not in wanted:
                        continue
                    dec = decoders.get(ch.id)
                    if dec is None:
                        dec = decoders[ch.id] = factory.decoder_for(ch.message_encoding, schemas.get(ch.schema_id))
                    bag.messages.append(BagMessage(ch.topic, record.log_time, dec(record.data)))
                elif isinstance(record, Footer):
                    bag.complete = True
        except EndOfFile:  # at the end of whole records (a crashed recorder, or a cut file: said above)
            pass
        except Exception as exc:  # noqa: BLE001 - any other failure of the reader is a damaged bag
            problem = f"{type(exc).__name__}: {str(exc)[:120] or 'no detail'}"
    if problem:
        raise InputError(f"{f}: truncated or corrupt bag ({problem}); readable: {len(bag.messages)} messages "
                         f"over {bag.span_s:.2f} s of log time")
    return bag
