"""What the bridge and `RemoteConsumer` agree on: key names, the frame header,
the Zenoh configuration, and the lazy import of Zenoh itself.

Key space under ``framebus/<KEY>/`` (one stream per remote consumer, so that
each link has its own flow control)::

    bridge/<BID>      liveliness token of the bridge serving KEY
    info              queryable: the bridge's format and encoding (msgpack)
    consumer/<CID>    liveliness token of each remote consumer
    frame/<CID>       frames for consumer CID: pixels as the payload, the
                      header (msgpack) as the attachment
    ack/<CID>         consumer CID acknowledging a frame it received (msgpack seq)
"""

from __future__ import annotations

import json
import re
import uuid
from types import ModuleType
from typing import Any, Iterable, NamedTuple

import msgpack

from .errors import FramebusError, ProtocolError
from .formats import FrameFormat

ROOT = "framebus"
ENCODINGS = ("raw", "jpeg")
PROTOCOL = 1
_KEY_RE = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")
_ENDPOINT_RE = re.compile(r"(tcp|udp|tls|quic|ws|unixsock-stream)/\S+")


def import_zenoh() -> ModuleType:
    """The `zenoh` module, or a clear error naming the extra that brings it."""
    try:
        import zenoh
    except ImportError as exc:
        raise FramebusError(
            f"Zenoh is not installed ({exc}); install it with: pip install 'framebus[remote]'"
        ) from None
    return zenoh


def import_simplejpeg() -> ModuleType:
    """The `simplejpeg` module (JPEG streams), or a clear error naming the extra."""
    try:
        import simplejpeg
    except ImportError as exc:
        raise FramebusError(
            f"simplejpeg is not installed ({exc}); install it with: pip install 'framebus[remote]'"
        ) from None
    module: ModuleType = simplejpeg
    return module


def check_key(key: str) -> str:
    """`key` if it names a stream (``cam0``, ``robot1/front``), else a FramebusError."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise FramebusError(
            f"bad key {key!r}: use letters, digits, '_', '-', '.' in chunks separated by '/' "
            f"(no wildcards), e.g. cam0 or robot1/front")
    return key


def new_id() -> str:
    """A random identifier for a bridge or consumer (a key chunk)."""
    return uuid.uuid4().hex[:16]


class Keys:
    """The key expressions of one stream."""

    def __init__(self, key: str) -> None:
        self.key = check_key(key)
        self.base = f"{ROOT}/{key}"
        self.info = f"{self.base}/info"
        self.bridges = f"{self.base}/bridge/*"
        self.consumers = f"{self.base}/consumer/*"
        self.acks = f"{self.base}/ack/*"

    def bridge(self, bid: str) -> str:
        return f"{self.base}/bridge/{bid}"

    def consumer(self, cid: str) -> str:
        return f"{self.base}/consumer/{cid}"

    def frame(self, cid: str) -> str:
        return f"{self.base}/frame/{cid}"

    def ack(self, cid: str) -> str:
        return f"{self.base}/ack/{cid}"


def last_chunk(key_expr: object) -> str:
    """The last ``/`` chunk of a key expression (an id)."""
    return str(key_expr).rsplit("/", 1)[-1]


def zenoh_config(listen: Iterable[str] = (), connect: Iterable[str] = (),
                 config_file: str | None = None, mode: str = "peer") -> Any:
    """A `zenoh.Config` for framebus.

    Without `config_file`: `mode` (``peer`` or ``client``), multicast scouting
    off (peers find each other through `connect`/`listen` endpoints only) and
    the shared-memory transport off (frames cross the network even between
    processes on one host, and nothing is left in ``/dev/shm``). With
    `config_file` (Zenoh's JSON5 format), that file is the starting point and
    only `listen`/`connect` given here are added to it.
    """
    zenoh = import_zenoh()
    listen, connect = list(listen), list(connect)
    for endpoint in listen + connect:
        if not _ENDPOINT_RE.fullmatch(endpoint):
            raise FramebusError(f"bad Zenoh endpoint {endpoint!r} (expected e.g. tcp/10.0.0.2:7447)")
    if mode not in ("peer", "client"):
        raise FramebusError(f"bad Zenoh mode {mode!r} (peer or client)")
    if mode == "client" and not connect and not config_file:
        raise FramebusError("Zenoh client mode needs --connect (a router or peer to connect to)")
    try:
        if config_file:
            config = zenoh.Config.from_file(config_file)
        else:
            config = zenoh.Config.from_json5(json.dumps({
                "mode": mode,
                "scouting": {"multicast": {"enabled": False}},
                "transport": {"shared_memory": {"enabled": False}},
            }))
        if listen:
            config.insert_json5("listen/endpoints", json.dumps(listen))
        if connect:
            config.insert_json5("connect/endpoints", json.dumps(connect))
    except zenoh.ZError as exc:
        raise FramebusError(f"bad Zenoh configuration: {exc}") from None
    except OSError as exc:
        raise FramebusError(f"cannot read Zenoh configuration {config_file}: {exc}") from None
    return config


def open_session(config: Any) -> Any:
    """`zenoh.open(config)`, its failures as FramebusError."""
    zenoh = import_zenoh()
    try:
        return zenoh.open(config)
    except zenoh.ZError as exc:
        raise FramebusError(f"cannot open a Zenoh session: {exc}") from None


class FrameHeader(NamedTuple):
    """What travels with each frame (as the Zenoh attachment)."""

    seq: int
    timestamp_ns: int  # the producer's CLOCK_MONOTONIC stamp
    buffer: int  # the producer's buffer index
    format: FrameFormat  # of the payload: tight rows for raw; the source's for jpeg
    encoding: str  # "raw" or "jpeg"
    run: str  # changes when the bridge or its producer restarts (seqs start again)

    def pack(self) -> bytes:
        return bytes(msgpack.packb({"v": PROTOCOL, "seq": self.seq, "ts": self.timestamp_ns,
                              "idx": self.buffer, "fmt": self.format.to_wire(),
                              "enc": self.encoding, "run": self.run}))


def unpack_message(data: bytes) -> FrameHeader | str:
    """A frame's header, or the reason a bridge gave in its goodbye message."""
    fields = _unpack(data, "frame header")
    try:
        if fields.get("bye") is not None:
            return str(fields["bye"])
        header = FrameHeader(int(fields["seq"]), int(fields["ts"]), int(fields["idx"]),
                             FrameFormat.from_wire(dict(fields["fmt"])), str(fields["enc"]),
                             str(fields["run"]))
    except (ValueError, TypeError, KeyError, FramebusError) as exc:
        raise ProtocolError(f"bad frame header from the bridge: {exc}") from None
    _check_encoding(header.encoding)
    return header


def _unpack(data: bytes, what: str) -> dict[str, Any]:
    try:
        fields = msgpack.unpackb(data)
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise ProtocolError(f"bad {what} from the bridge: {type(exc).__name__}: {exc}") from None
    if not isinstance(fields, dict):
        raise ProtocolError(f"bad {what} from the bridge: not a map")
    if fields.get("bye") is None and fields.get("v") != PROTOCOL:
        raise ProtocolError(f"the bridge speaks protocol {fields.get('v')!r}; this framebus "
                            f"speaks {PROTOCOL} (update both ends to the same version)")
    return fields


def _check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ProtocolError(f"unknown encoding {encoding!r} from the bridge")


def bye_message(reason: str) -> bytes:
    return bytes(msgpack.packb({"bye": reason}))


class Info(NamedTuple):
    """The bridge's answer to a query on ``info``."""

    format: FrameFormat  # the producer's
    encoding: str
    bridge: str  # its id

    def pack(self) -> bytes:
        return bytes(msgpack.packb({"v": PROTOCOL, "fmt": self.format.to_wire(),
                              "enc": self.encoding, "bid": self.bridge}))

    @classmethod
    def unpack(cls, data: bytes) -> Info:
        fields = _unpack(data, "info")
        try:
            info = cls(FrameFormat.from_wire(dict(fields["fmt"])), str(fields["enc"]),
                       str(fields["bid"]))
        except (ValueError, TypeError, KeyError, FramebusError) as exc:
            raise ProtocolError(f"bad info from the bridge: {exc}") from None
        _check_encoding(info.encoding)
        return info


def tight(fmt: FrameFormat) -> FrameFormat:
    """`fmt` without row padding: the layout raw frames travel in."""
    if fmt.compressed:
        return fmt
    return FrameFormat(fmt.width, fmt.height, fmt.pixel_format)
