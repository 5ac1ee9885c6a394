"""Where results live: a local folder or an object store, through fsspec.

``results_dir`` is a local path or an fsspec URL (``s3://bucket/prefix``,
``gs://...``, ``abfs://...``, ``file://...``). :class:`Storage` is the one place
that touches it; the journal, ``result.json``, trial logs and the plugin's reads
all go through it, so the Spark driver, the Airflow worker and the API server
need no shared disk: only the store.

Object stores cannot append to an object, so a journal there is a sequence of
numbered segment objects (:class:`SegmentWriter`): records are buffered and
shipped as one new object at most ``max_delay`` seconds (or ``max_records``
records) after the first unshipped one. A crash loses at most that window,
and only records of trials that a resume runs again anyway (a record is
shipped before the experiment is reported ended). Each segment is one PUT, so
a reader never sees half of one. A local journal is a single file appended and
flushed per record; :func:`read_journal_lines` reads either layout.

Credentials come from ``storage_options`` (fsspec's keyword arguments, e.g.
``key``/``secret``/``client_kwargs.endpoint_url`` for S3) or the store's own
defaults (environment, instance identity): never from a URL that is logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import time
import uuid
from collections.abc import Mapping
from typing import Any

from maggy_core.exceptions import MaggyError

#: The environment variable holding the results store's fsspec options as JSON
#: (how ``MaggyOperator`` hands a connection's credentials to the driver: an
#: environment variable is on no command line and in no log).
OPTIONS_ENV = "MAGGY_STORAGE_OPTIONS"
#: Or the path of a file (mode 0600) holding that JSON.
OPTIONS_FILE_ENV = "MAGGY_STORAGE_OPTIONS_FILE"

#: The single-file journal of a local results folder.
JOURNAL_FILE = "journal.jsonl"
#: The folder of journal segments on an object store.
SEGMENTS = "journal"
_SEGMENT_DIGITS = 8


class StorageError(MaggyError):
    """The results store cannot be used (unknown protocol, missing package, no access)."""


def _fsspec():  # -> module
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - fsspec is a dependency
        raise StorageError("results on a URL need fsspec: pip install fsspec") from exc
    return fsspec


class Storage:
    """A results root: a local folder or an fsspec URL, and the operations the
    engine needs on it. Paths given to the methods are relative to the root,
    ``/``-separated.

    Args:
        url: Local path (relative paths are made absolute) or fsspec URL.
        storage_options: Keyword arguments for the fsspec filesystem.

    Raises:
        StorageError: the URL's protocol is unknown or its package is missing
            (the message names what to install).
    """

    def __init__(
        self, url: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
    ):
        raw = os.fspath(url)
        if not raw:
            raise StorageError("results_dir: must be a path or a URL, got ''")
        self.storage_options = dict(storage_options or {})
        fsspec = _fsspec()
        if "://" not in raw:
            raw = os.path.abspath(raw)
        try:
            fs, root = fsspec.core.url_to_fs(raw, **self.storage_options)
        except (ImportError, ValueError) as exc:
            protocol = raw.split("://", 1)[0]
            raise StorageError(
                f"results_dir {safe_url(raw)!r}: cannot use the {protocol!r} store ({exc}); "
                f"for s3:// install s3fs, for gs:// gcsfs, for abfs:// adlfs"
            ) from None
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.is_local = protocol in ("file", "local")
        self.url = self.root if self.is_local else f"{protocol}://{self.root}"

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:
        # A filesystem object may hold sockets and credentials' sessions: rebuild it.
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["storage_options"])  # type: ignore[misc]

    # ---------------------------------------------------------------- paths

    def path(self, *parts: str) -> str:
        """The filesystem path of ``parts`` under the root."""
        return posixpath.join(self.root, *parts) if parts else self.root

    def child(self, *parts: str) -> Storage:
        """A :class:`Storage` rooted at ``parts`` under this root (same credentials)."""
        other = object.__new__(Storage)
        other.storage_options = self.storage_options
        other.fs, other.is_local = self.fs, self.is_local
        other.root = self.path(*parts)
        other.url = other.root if self.is_local else self.url.rstrip("/") + "/" + "/".join(parts)
        return other

    def url_of(self, *parts: str) -> str:
        """The URL (or local path) of ``parts``: what a user pastes to find the files."""
        if self.is_local:
            return self.path(*parts)
        return "/".join([self.url.rstrip("/"), *parts])

    # ---------------------------------------------------------------- reads

    def _fresh(self, path: str) -> str:
        """``path``, with the filesystem's cached listings of it dropped: s3fs and
        gcsfs keep listings for the life of the instance (shared per process), and
        the journal's segments, the experiments and ``result.json`` change while a
        reader (the plugin, a resume, a follower) lives on."""
        if not self.is_local:
            self.fs.invalidate_cache(path)
        return path

    def exists(self, *parts: str) -> bool:
        return bool(self.fs.exists(self._fresh(self.path(*parts))))

    def read_bytes(self, *parts: str, limit: int | None = None) -> bytes | None:
        """The object's bytes (at most ``limit`` of them), or None when it does not exist."""
        try:
            return bytes(self.fs.cat_file(self.path(*parts), start=0 if limit else None, end=limit))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def read_text(self, *parts: str) -> str | None:
        data = self.read_bytes(*parts)
        return None if data is None else data.decode("utf-8")

    def files(self, *parts: str) -> list[str]:
        """Every file below ``parts`` (at any depth), as ``/``-separated paths
        relative to it, sorted; [] when there is none."""
        base = self._fresh(self.path(*parts)).rstrip("/")
        try:
            found = self.fs.find(base)
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for entry in found:
            path = str(entry).rstrip("/")
            if not path.startswith(base + "/"):
                path = self.fs._strip_protocol(path)
            if path.startswith(base + "/"):
                out.append(path[len(base) + 1 :])
        return sorted(out)

    def list(self, *parts: str) -> list[str]:
        """Names (not paths) directly under ``parts``, sorted; [] when there is none."""
        try:
            entries = self.fs.ls(self._fresh(self.path(*parts)), detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        base = self.path(*parts).rstrip("/")
        names = {posixpath.basename(str(e).rstrip("/")) for e in entries}
        names.discard(posixpath.basename(base))  # some stores list the folder itself
        return sorted(n for n in names if n)

    def is_regular_file(self, *parts: str) -> bool:
        """True for a regular file (not a folder, not a symbolic link) under the root.

        For a local root the resolved path must stay inside the resolved root, so a
        link planted in the results folder never makes a reader serve another file.
        """
        if self.is_local:
            path = self.path(*parts)
            root = os.path.realpath(self.root)
            real = os.path.realpath(path)
            if os.path.islink(path) or os.path.commonpath([root, real]) != root:
                return False
            return os.path.isfile(path)
        try:
            return self.fs.info(self._fresh(self.path(*parts))).get("type") == "file"
        except FileNotFoundError:
            return False

    # ---------------------------------------------------------------- writes

    def makedirs(self, *parts: str) -> None:
        if self.is_local:
            os.makedirs(self.path(*parts), exist_ok=True)
        # Object stores have no folders: an object's key makes its prefix.

    def write_bytes(self, data: bytes, *parts: str) -> str:
        """Write an object so that a reader sees the old content or the new, never
        half of it: on a local disk a uniquely named temporary file, fsync'ed, then
        renamed over the target (and the folder fsync'ed); on an object store one PUT.

        Returns:
            The path written.
        """
        path = self.path(*parts)
        if not self.is_local:
            self.fs.pipe_file(path, data)
            return path
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(folder)
        return path

    def write_text(self, text: str, *parts: str) -> str:
        return self.write_bytes(text.encode("utf-8"), *parts)

    def modified(self, *parts: str) -> float | None:
        """When the object was last written (seconds since the epoch), or None."""
        path = self.path(*parts)
        if self.is_local:
            try:
                return os.stat(path).st_mtime
            except OSError:
                return None
        try:
            info = self.fs.info(self._fresh(path))
        except (FileNotFoundError, OSError):
            return None
        stamp = info.get("LastModified") or info.get("mtime") or info.get("updated")
        if hasattr(stamp, "timestamp"):
            return float(stamp.timestamp())
        return float(stamp) if isinstance(stamp, int | float) else None

    def move(self, src: tuple[str, ...], dst: tuple[str, ...]) -> None:
        """Move an object (a rename on a local disk; copy then delete on a store)."""
        if self.is_local:
            os.replace(self.path(*src), self.path(*dst))
        else:
            self.fs.mv(self.path(*src), self.path(*dst))

    def remove(self, *parts: str) -> None:
        """Remove an object; nothing when it does not exist."""
        with contextlib.suppress(OSError):
            self.fs.rm_file(self.path(*parts))


class SegmentWriter:
    """A journal on a store that cannot append: records shipped as numbered segments.

    ``append`` buffers a line and ships the buffer as the next segment object when
    the oldest unshipped line is ``max_delay`` seconds old or ``max_records`` lines
    are waiting; the caller also calls :meth:`flush` at the points that must be
    durable (the experiment's end) and :meth:`tick` from its loop so that a quiet
    experiment still ships within ``max_delay``. Segment numbers continue after
    the highest existing one, so a resumed run appends after the run before it.

    Not thread-safe: one writer (the coordinator's thread).
    """

    def __init__(self, storage: Storage, *, max_delay: float = 1.0, max_records: int = 500) -> None:
        self.storage = storage
        self.max_delay = max_delay
        self.max_records = max_records
        existing = _segment_numbers(storage)
        self._next = (existing[-1] + 1) if existing else 0
        self._buffer: list[str] = []
        self._oldest: float | None = None
        self.shipped = 0  # segments written by this writer

    def append(self, line: str) -> None:
        """Buffer one record (a JSON line without its newline)."""
        if "\n" in line:
            raise ValueError("a journal record must be one line")
        self._buffer.append(line)
        if self._oldest is None:
            self._oldest = time.monotonic()
        if len(self._buffer) >= self.max_records:
            self.flush()

    def tick(self) -> None:
        """Ship the buffer if its oldest line has waited ``max_delay`` seconds."""
        if self._oldest is not None and time.monotonic() - self._oldest >= self.max_delay:
            self.flush()

    @property
    def pending(self) -> int:
        """Lines buffered and not shipped yet (what a crash now would lose)."""
        return len(self._buffer)

    def flush(self) -> None:
        """Ship every buffered line as one new segment (nothing when empty)."""
        if not self._buffer:
            return
        data = ("\n".join(self._buffer) + "\n").encode("utf-8")
        self.storage.write_bytes(data, SEGMENTS, _segment_name(self._next))
        self._next += 1
        self.shipped += 1
        self._buffer.clear()
        self._oldest = None


def read_journal_lines(storage: Storage) -> list[str]:
    """Every complete line of an experiment's journal, in order: the local file
    (a torn last line, which has no newline, is left out) followed by the
    segments in number order.

    Args:
        storage: The experiment's folder (see :meth:`Storage.child`).
    """
    lines: list[str] = []
    text = storage.read_text(JOURNAL_FILE)
    if text:
        lines.extend(complete_lines(text))
    for number in _segment_numbers(storage):
        seg = storage.read_text(SEGMENTS, _segment_name(number))
        if seg:
            lines.extend(seg.splitlines())
    return [line for line in lines if line.strip()]


def complete_lines(text: str) -> list[str]:
    """The lines of ``text`` that end with a newline: what follows the last newline
    is a line a writer was in the middle of (a torn tail) and is left out."""
    return text[: text.rfind("\n") + 1].splitlines()


def parse_json_lines(lines: str | bytes | list[str] | None) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines text (or of its lines): the one reader of
    every JSON-lines file (journal, ablation history). A line that is empty, does
    not parse (a torn line an append has since closed) or is not an object is
    skipped, the same way for every reader."""
    if lines is None:
        return []
    if isinstance(lines, bytes):
        lines = lines.decode("utf-8", errors="replace")
    if isinstance(lines, str):
        lines = lines.splitlines()
    out = []
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def has_journal(storage: Storage) -> bool:
    """Whether an experiment folder holds a journal (a local file or segments)."""
    return storage.is_regular_file(JOURNAL_FILE) or bool(_segment_numbers(storage))


def journal_modified(storage: Storage) -> float | None:
    """When the journal was last written: its file's time, or its last segment's."""
    numbers = _segment_numbers(storage)
    if numbers:
        return storage.modified(SEGMENTS, _segment_name(numbers[-1]))
    return storage.modified(JOURNAL_FILE)


def storage_options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The results store's fsspec options handed to this process: the JSON object in
    ``$MAGGY_STORAGE_OPTIONS``, else in the file named by
    ``$MAGGY_STORAGE_OPTIONS_FILE``; ``{}`` when neither is set (the store's own
    defaults apply: environment, instance identity).

    Raises:
        StorageError: naming the variable, when its value is not a JSON object (the
            message never repeats the value: it may hold a secret).
    """
    env = os.environ if environ is None else environ
    name, raw = OPTIONS_ENV, env.get(OPTIONS_ENV, "")
    if not raw.strip() and env.get(OPTIONS_FILE_ENV):
        name = OPTIONS_FILE_ENV
        try:
            with open(env[OPTIONS_FILE_ENV], encoding="utf-8") as fh:
                raw = fh.read()
        except OSError as exc:
            raise StorageError(f"{name}: cannot read the file it names ({exc.strerror})") from None
    if not raw.strip():
        return {}
    try:
        options = json.loads(raw)
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise StorageError(f"{name}: must be a JSON object of fsspec storage options")
    return options


def open_storage(
    url: str | os.PathLike[str] | Storage, storage_options: Mapping[str, Any] | None = None
) -> Storage:
    """``url`` as a :class:`Storage`; an object store without options given takes
    them from the environment (:func:`storage_options_from_env`)."""
    if isinstance(url, Storage):
        return url
    raw = os.fspath(url)
    if storage_options is None and "://" in raw and not raw.startswith("file://"):
        storage_options = storage_options_from_env()
    return Storage(raw, storage_options)


def _segment_name(number: int) -> str:
    return f"{number:0{_SEGMENT_DIGITS}d}.jsonl"


def _segment_numbers(storage: Storage) -> list[int]:
    numbers = []
    for name in storage.list(SEGMENTS):
        stem, dot, ext = name.partition(".")
        if dot and ext == "jsonl" and stem.isdigit():
            numbers.append(int(stem))
    return sorted(numbers)


def fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (POSIX: fsync the directory; nothing where
    the platform does not allow it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def safe_url(url: str) -> str:
    """A URL without credentials that a user may have put in it (for messages)."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
