"""The registry snapshot the master shares with its workers: one file in shared memory, and
the deltas between generations.

Every registry change is a new generation number. The master (SnapshotWriter) finds what
changed since the last generation (`advance`: by identity, as a registry keeps the config
object it holds; `advance_keys`: only the keys the registry says changed) and, when that is
a few configs (at most DELTA_MAX), sends only that Delta to the workers over their pipes: a
worker serving exactly the delta's base generation applies it, any other asks for the whole
file. The whole registry is written to the file (`flush`) only when it is needed: for the
first generation, a large change, a new or restarted worker, or one that missed a delta. A
worker reads the file (SnapshotReader) and swaps its registry in one step. A write goes to a
temp file beside the snapshot, renamed over the old one, so a reader that opens the path sees
one whole generation or the previous one, never a mix, and a reader that opened the old file
keeps reading it intact.

File format (all little-endian): a 32-byte header, `magic (8s) b"GNAPISNP"`, `format version
(u32)`, `generation (u64)`, `writer pid (u32)`, `body length (u64)`, then the body, a msgpack
array of one msgpack-encoded FunConfig (bin) per config. Each config is encoded once by the
writer and decoded once by a reader: a config that did not change since the last generation
is the same bytes, which the reader maps back to the FunConfig object it decoded before (so a
worker knows what changed without comparing, and a 10 000-config registry in which one
function changed costs one decode). The writer pid lets a new master tell a segment left by a
crashed one (pid dead: replaced) from one a running master owns (refused).
"""

from __future__ import annotations

import contextlib
import gc
import os
import struct
import tempfile
from collections.abc import Callable, Iterable

import msgspec

from genapi import log
from genapi.errors import GenapiError
from genapi.structs import FunConfig

MAGIC = b"GNAPISNP"
FORMAT_VERSION = 2
HEADER = struct.Struct("<8sIQIQ")  # magic, format version, generation, writer pid, body length
SUFFIX = ".snapshot"
DELTA_MAX = 1024  # more configs changed or gone than this: the whole file is written and read
_TMP = ".tmp"


class SnapshotError(GenapiError):
    """A snapshot that cannot be read: missing, torn or corrupt, or older than the generation
    asked for. The message names the path and what failed."""


class Snapshot(msgspec.Struct, frozen=True, gc=False):
    """One published generation of the whole registry."""

    generation: int
    configs: list[FunConfig]


Ident = tuple[str, str, str | None]  # (service, request_type, version): one config in a registry


class Delta(msgspec.Struct, frozen=True, gc=False):
    """What changed from generation `base` to the next: the configs added or changed (`put`,
    each replacing the one of its service, request_type and version) and those gone (`drop`).
    Applied only to exactly generation `base`; a reader holding another reads the whole file."""

    base: int
    put: list[FunConfig]
    drop: list[Ident]


def _ident(cfg: FunConfig) -> Ident:
    return (cfg.service, cfg.request_type, cfg.version)


_encoder = msgspec.msgpack.Encoder()
_blobs_decoder = msgspec.msgpack.Decoder(list[bytes])
_config_decoder = msgspec.msgpack.Decoder(FunConfig)


def default_path(host: str, port: int) -> str:
    """`/dev/shm/genapi-<uid>/<host>-<port>.snapshot` (under the temp dir where there is no
    /dev/shm): one per listening address, so two gateways on one host never share a segment,
    and per user, so no other user's directory is written in."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    return os.path.join(base, f"genapi-{os.getuid()}", f"{host.replace(':', '_')}-{port}{SUFFIX}")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _header_pid(path: str) -> int | None:
    """The writer pid in the header of the file at `path`; None when it has no readable header."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
    except FileNotFoundError:
        return None
    if len(head) < HEADER.size or head[:8] != MAGIC:
        return None
    return int(HEADER.unpack(head)[3])


def _ensure_dir(directory: str) -> None:
    """Creates the directory 0o700; refuses one another user owns (a world-writable /dev/shm
    lets anyone create `genapi-<uid>` first)."""
    try:
        os.mkdir(directory, 0o700)
        os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(directory, 0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    owner = os.stat(directory).st_uid
    if owner != os.getuid():
        raise RuntimeError(
            f"snapshot directory {directory} is owned by uid {owner}, not {os.getuid()}: "
            "refusing to write the registry there"
        )


class SnapshotWriter:
    """The master's side: publishes the whole registry as the next generation."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.generation = 0
        self._pid = os.getpid()
        self._tmp = f"{self.path}.{self._pid}{_TMP}"
        self._buf = bytearray(HEADER.size)
        self._closed = False
        self.written = 0  # the generation the file holds (behind `generation` after a delta)
        self._current: dict[Ident, FunConfig] = {}  # the current generation's configs
        self._order: list[FunConfig] | None = None  # the order `publish` was given them in
        self._encoded: dict[int, tuple[FunConfig, bytes]] = {}  # id(config) -> (config, its bytes)
        _ensure_dir(os.path.dirname(self.path))
        self._take_over()

    def _take_over(self) -> None:
        """Removes what a crashed master left at the path (its snapshot and its temp files);
        refuses a snapshot that a live other process still owns."""
        if os.path.lexists(self.path):
            pid = _header_pid(self.path)
            if pid is not None and pid != self._pid and _pid_alive(pid):
                raise RuntimeError(
                    f"snapshot {self.path} belongs to the running process {pid} (another master serves this address)"
                )
            if pid != self._pid:
                log.warning("snapshot_stale_replaced", path=self.path, pid=pid if pid is not None else "unreadable")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        directory, name = os.path.split(self.path)
        for entry in os.listdir(directory):
            if entry.startswith(name + ".") and entry.endswith(_TMP):
                pid_text = entry[len(name) + 1 : -len(_TMP)]
                if pid_text.isdigit() and (int(pid_text) == self._pid or not _pid_alive(int(pid_text))):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(directory, entry))

    def publish(self, configs: list[FunConfig]) -> int:
        """Writes `configs` as generation+1 and returns it. The file appears whole or not at
        all (temp file + rename); nothing is fsynced, as shared memory is not durable anyway."""
        self.advance(configs)
        return self.flush()  # the delta `advance` may return is for the pipe: the file is written here

    def advance(self, configs: list[FunConfig], max_delta: int = DELTA_MAX) -> Delta | None:
        """Makes `configs` generation+1 and returns what changed since the last generation (a
        Delta), without writing the file; when more than `max_delta` configs changed or went
        (or on the first generation), writes the whole file and returns None. A config that
        did not change is the same object (a registry keeps the config it holds), so what
        changed is found by identity, without comparing. `flush` writes the file of a
        generation that went out as a delta, for a reader that needs it whole."""
        current = self._current
        fresh = {_ident(cfg): cfg for cfg in configs}
        put = [cfg for ident, cfg in fresh.items() if current.get(ident) is not cfg]
        drop = [ident for ident in current if ident not in fresh]
        self._current, self._order = fresh, configs
        return self._next(put, drop, max_delta)

    def advance_keys(
        self, keys: Iterable[Ident], held: Callable[[Ident], FunConfig | None], max_delta: int = DELTA_MAX
    ) -> Delta | None:
        """`advance` when only `keys` may have changed: `held(key)` is the config each holds
        now (None: gone). What it costs is in the keys, not the registry's size."""
        current = self._current
        put: list[FunConfig] = []
        drop: list[Ident] = []
        for ident in keys:
            cfg = held(ident)
            if cfg is None:
                if current.pop(ident, None) is not None:
                    drop.append(ident)
            elif current.get(ident) is not cfg:
                current[ident] = cfg
                put.append(cfg)
        if put or drop:
            self._order = None
        return self._next(put, drop, max_delta)

    def _next(self, put: list[FunConfig], drop: list[Ident], max_delta: int) -> Delta | None:
        self.generation += 1
        if self.generation == 1 or len(put) + len(drop) > max_delta:
            self.flush()
            return None
        return Delta(self.generation - 1, put, drop)

    def flush(self) -> int:
        """Writes the current generation whole, unless the file already holds it; returns it."""
        if self.written == self.generation:
            return self.generation
        generation = self.generation
        cache = self._encoded
        encoded: dict[int, tuple[FunConfig, bytes]] = {}
        blobs = []
        for cfg in self._current.values() if self._order is None else self._order:
            hit = cache.get(id(cfg))  # a config written before is not encoded again
            if hit is None or hit[0] is not cfg:
                hit = (cfg, _encoder.encode(cfg))
            encoded[id(cfg)] = hit
            blobs.append(hit[1])
        self._encoded = encoded
        buf = self._buf
        _encoder.encode_into(blobs, buf, HEADER.size)  # the body after the header's room, no copy
        HEADER.pack_into(buf, 0, MAGIC, FORMAT_VERSION, generation, os.getpid(), len(buf) - HEADER.size)
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(buf)
            written = 0
            while written < len(buf):
                written += os.write(fd, view[written:])
            os.close(fd)
            fd = -1
            os.replace(self._tmp, self.path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            raise
        self.written = generation
        return generation

    def close(self) -> None:
        """Unlinks the snapshot. Idempotent, and a no-op in a forked child (its exit must not
        remove the master's segment) or when the file is no longer this process's."""
        if self._closed or os.getpid() != self._pid:
            return
        self._closed = True
        for path in (self._tmp, self.path):
            if path == self.path and _header_pid(path) != self._pid:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


class SnapshotReader:
    """A worker's side: reads the generation it was told of. `generation` is the last one read
    (0 before the first); asked again for it while the file still holds it, read() returns the
    same Snapshot without decoding."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.generation = 0
        self._last: Snapshot | None = None
        self._last_pid = -1
        self._decoded: dict[bytes, FunConfig] = {}  # the last generation's configs by their bytes

    def read(self, generation: int) -> Snapshot:
        """The snapshot holding `generation` or a newer one (the caller acknowledges the
        Snapshot's own generation). Raises SnapshotError when the file is missing, torn or
        corrupt, or holds an older generation."""
        path = self.path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SnapshotError(f"snapshot {path} does not exist (generation {generation} asked for)") from None
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, HEADER.size, 0)
            if len(head) < HEADER.size:
                raise SnapshotError(
                    f"snapshot {path} is torn: {len(head)} bytes, shorter than the {HEADER.size}-byte header"
                )
            magic, version, found, pid, length = HEADER.unpack(head)
            if magic != MAGIC:
                raise SnapshotError(f"snapshot {path} is corrupt: magic {magic!r}, expected {MAGIC!r}")
            if version != FORMAT_VERSION:
                raise SnapshotError(
                    f"snapshot {path} has format version {version}; this genapi reads version {FORMAT_VERSION}"
                )
            if size != HEADER.size + length:
                raise SnapshotError(
                    f"snapshot {path} is torn: header says {length} body bytes, file holds {size - HEADER.size}"
                )
            if found < generation:
                raise SnapshotError(
                    f"snapshot {path} holds generation {found}, older than generation {generation} asked for"
                )
            last = self._last
            if last is not None and found == last.generation and pid == self._last_pid:
                return last
            body = _read_exactly(fd, length, HEADER.size)
        finally:
            os.close(fd)
        if len(body) != length:
            raise SnapshotError(f"snapshot {path} is torn: header says {length} body bytes, read {len(body)}")
        collecting = gc.isenabled()
        if collecting:  # a big registry is ~35 new containers per config: a third of the time went to gc passes
            gc.disable()
        try:
            known = self._decoded
            decoded: dict[bytes, FunConfig] = {}
            configs = []
            for blob in _blobs_decoder.decode(body):
                cfg = known.get(blob)
                if cfg is None:
                    cfg = _config_decoder.decode(blob)
                decoded[blob] = cfg
                configs.append(cfg)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise SnapshotError(f"snapshot {path} generation {found} is corrupt: {exc}") from None
        finally:
            if collecting:
                gc.enable()
        self._decoded = decoded
        snap = Snapshot(found, configs)
        self._last, self._last_pid, self.generation = snap, pid, found
        return snap


def _read_exactly(fd: int, length: int, offset: int) -> bytes:
    """`length` bytes from `offset`; fewer only at end of file."""
    data = os.pread(fd, length, offset)
    if len(data) == length or not data:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


__all__ = [
    "DELTA_MAX",
    "FORMAT_VERSION",
    "MAGIC",
    "Delta",
    "Ident",
    "Snapshot",
    "SnapshotError",
    "SnapshotReader",
    "SnapshotWriter",
    "default_path",
]
