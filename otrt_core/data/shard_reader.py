"""Reading a snapshot's samples by number, from a local directory or an S3 prefix.

:func:`open_snapshot` reads ``index.json`` and gives a :class:`Snapshot` over a
:class:`ShardReader`. The reader serves "the image bytes of sample ``j`` of
shard ``s``":

- each shard's members are indexed once per process (one pass over its USTAR
  headers, 512 bytes read per member, two integers kept per sample: a loader
  worker's memory does not grow with the shard's members), then a sample is one
  ``pread`` at its offset;
- a remote shard is first fetched whole into the host's shard cache
  (:class:`otrt_core.data.shard_cache.ShardCache`: shared by every job and
  loader worker on the host, bounded, evicting safely under concurrency),
  written to a temporary name, then renamed, so that no reader sees half a
  shard. A fetched shard's sha256 is checked against the index.

Loader workers are separate processes: each opens its own files and its own
S3 client (created lazily, after the fork).
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlparse

from otrt_core.data.shard_cache import ShardCache, touch
from otrt_core.data.shard_writer import INDEX, ShardIndex, ShardInfo
from otrt_core.data.snapshot import Snapshot
from otrt_core.data.sources import s3_client
from otrt_core.errors import UserError

IMAGE_SUFFIXES = (b".jpg", b".png")
BLOCK = 512  # a tar header, and the unit data is padded to
FILE_TYPES = (b"0", b"\0")  # regular files; the converter writes nothing else
OPEN_SHARDS = 16  # file descriptors a reader keeps open


class SnapshotUnavailable(UserError):
    """The snapshot's index or a shard cannot be read."""


class ShardReader:
    """Sample bytes by (shard, position), from ``location`` (a directory or s3://…)."""

    def __init__(
        self, location: str, cache: ShardCache, s3_endpoint_url: str | None = None
    ) -> None:
        self.location, self.cache = location, cache
        self.cache_dir = cache.directory(location)
        self.s3_endpoint_url = s3_endpoint_url
        self.remote = location.startswith("s3://")
        self._offsets: dict[str, array] = {}  # shard name -> offset, size, offset, size, …
        self._files: OrderedDict[str, int] = OrderedDict()  # shard name -> open descriptor
        self._client = None
        self._client_pid = 0

    def index(self) -> ShardIndex:
        if not self.remote:
            path = Path(self.location) / INDEX
            if not path.exists():
                raise SnapshotUnavailable(f"no snapshot at {self.location} ({INDEX} is missing)")
            return ShardIndex.read(path)
        local = self.cache_dir / INDEX
        self._download(INDEX, local)
        return ShardIndex.read(local)

    def read(self, shard: ShardInfo, position: int) -> bytes:
        """The image bytes of the ``position``-th sample of ``shard``."""
        descriptor = self._open(shard)
        offsets = self._offsets[shard.name]
        return os.pread(descriptor, offsets[2 * position + 1], offsets[2 * position])

    def _open(self, shard: ShardInfo) -> int:
        if shard.name in self._files:
            self._files.move_to_end(shard.name)
            return self._files[shard.name]
        try:
            descriptor = os.open(self._local(shard), os.O_RDONLY)
        except FileNotFoundError:  # evicted by another process since: fetched again
            descriptor = os.open(self._local(shard), os.O_RDONLY)
        if shard.name not in self._offsets:
            self._offsets[shard.name] = _image_offsets(descriptor)
        self._files[shard.name] = descriptor
        while len(self._files) > OPEN_SHARDS:
            os.close(self._files.popitem(last=False)[1])
        return descriptor

    def _local(self, shard: ShardInfo) -> Path:
        """The shard's local file: in the snapshot's directory, or fetched into the cache."""
        if not self.remote:
            return Path(self.location) / shard.name
        path = self.cache_dir / shard.name
        if touch(path):  # cached, and now recently used: evicted last
            return path
        self._download(shard.name, path)
        with open(path, "rb") as handle:
            if hashlib.file_digest(handle, "sha256").hexdigest() != shard.sha256:
                path.unlink(missing_ok=True)
                raise SnapshotUnavailable(f"shard {shard.name} does not match its index")
        self.cache.evict(keep=path)
        return path

    def _download(self, name: str, target: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        if self._client is None or self._client_pid != os.getpid():  # not a parent's, forked
            self._client, self._client_pid = s3_client(self.s3_endpoint_url), os.getpid()
        parsed = urlparse(self.location)
        key = f"{parsed.path.strip('/')}/{name}".lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            self._client.download_file(parsed.netloc, key, str(temp))
        except (BotoCoreError, ClientError) as error:
            temp.unlink(missing_ok=True)
            raise SnapshotUnavailable(
                f"cannot fetch {name} from {self.location}: {error}"
            ) from None
        os.replace(temp, target)


def _image_offsets(descriptor: int) -> array:
    """The data offset and size of each sample's image member, in order, flat: one pass
    over the headers of the open shard (its own descriptor: the file may be evicted
    meanwhile). The converter writes USTAR tars (``shard_writer``): a member is a
    512-byte header (name at 0, octal size at 124, type at 156) and its data, padded to
    512 bytes; two zero blocks end the archive."""
    found = array("q")
    offset = 0
    while len(header := os.pread(descriptor, BLOCK, offset)) == BLOCK and any(header):
        size = int(header[124:136].strip(b"\0 ") or b"0", 8)
        if header[156:157] not in FILE_TYPES:
            kind = header[156:157].decode(errors="replace")
            raise SnapshotUnavailable(f"a shard holds a tar member of type {kind!r}, not USTAR")
        if header[:100].rstrip(b"\0").endswith(IMAGE_SUFFIXES):
            found.extend((offset + BLOCK, size))
        offset += BLOCK + -(-size // BLOCK) * BLOCK
    return found


def open_snapshot(location: str, cache: ShardCache, s3_endpoint_url: str | None = None) -> Snapshot:
    reader = ShardReader(location, cache, s3_endpoint_url)
    return Snapshot(reader.index(), reader)
