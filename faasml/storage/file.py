"""A :class:`~faasml.interfaces.ObjectStore` that keeps each object in a file under a directory.

Layout: the object ``a/b/c`` is the file ``<root>/a/b/c.obj``. Object files carry the ``.obj``
suffix and directories do not, so ``a`` (file ``a.obj``) and ``a/b`` (directory ``a``) coexist as
they do on S3. A directory segment that would itself look like an object file (``x.obj``) or a
temporary file (``.tmp-...``) is escaped by appending ``~`` (see :func:`_dir_name`).

Writes go to a ``.tmp-*`` file in the target directory which is then renamed (``os.replace``) or
hard-linked (``os.link``, for ``if_absent``) over the object name, so readers see either the old
or the new object and never a partial one; ``.tmp-*`` files left by a killed writer are never
listed. Writes are not fsync'ed: the store promises atomicity, not durability across a crash.
"""

from __future__ import annotations

import builtins
import os
import re
import shutil
import stat
import tempfile
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar

from faasml.errors import (
    AlreadyExistsError,
    InvalidKeyError,
    NotFoundError,
    ServiceUnavailableError,
)
from faasml.interfaces import ObjectInfo, ObjectStore, validate_key
from faasml.storage._common import byte_view, clamp_range

__all__ = ["FileObjectStore"]

_SUFFIX = ".obj"
_TMP_PREFIX = ".tmp-"
# Names a directory must not take as-is: object files, and what was already escaped.
_NEEDS_ESCAPE = re.compile(r"\.obj~*\Z")
_ESCAPED = re.compile(r"\.obj~+\Z")
# What validate_key forbids inside a segment (backslash, control characters).
_UNSAFE_CHAR = re.compile(r"[\\\x00-\x1f]")
# NAME_MAX of every common Linux/macOS file system.
_NAME_MAX = 255
# Leave the (default 64 MiB) /dev/shm of a container alone: objects can be large.
_SHM_MIN_FREE = 1 << 30
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_MAKEDIRS_ATTEMPTS = 100
# Directories remembered as checked (see FileObjectStore._paths); the cache restarts when full.
_VERIFIED_DIRS_MAX = 4096


def _dir_name(segment: str) -> str:
    """Map a key segment to its directory name; injective, never ends in ``.obj``.

    ``x.obj`` -> ``x.obj~``, ``x.obj~`` -> ``x.obj~~``, ``.tmp-a`` -> ``.tmp-a~``; anything
    else is unchanged.
    """
    if segment.startswith(_TMP_PREFIX) or _NEEDS_ESCAPE.search(segment):
        return segment + "~"
    return segment


def _segment_of_dir(name: str) -> str:
    """Invert :func:`_dir_name`."""
    if name.startswith(_TMP_PREFIX) or _ESCAPED.search(name):
        return name[:-1]
    return name


def _default_parent() -> str | None:
    """Return ``/dev/shm`` when it is a writable tmpfs with room to spare, else ``None``."""
    shm = "/dev/shm"
    try:
        if not (os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK)):
            return None
        st = os.statvfs(shm)
    except OSError:
        return None
    return shm if st.f_bavail * st.f_frsize >= _SHM_MIN_FREE else None


class FileObjectStore(ObjectStore):
    """Objects as files under a directory, with atomic writes and ranged reads.

    Several processes (or hosts sharing a POSIX file system with atomic ``rename`` and ``link``)
    may use the same root concurrently.

    :param root: the directory holding the objects, created if missing. ``None`` creates a
        private temporary directory (on ``/dev/shm`` when available) that :meth:`close` removes.
    """

    name: ClassVar[str] = "file"
    same_host = True

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._owns_root = root is None
        if root is None:
            root = tempfile.mkdtemp(prefix="faasml-store-", dir=_default_parent())
        else:
            os.makedirs(root, exist_ok=True)
        self._root = os.path.abspath(os.fspath(root))
        self._remove_root: weakref.finalize[[str, int], FileObjectStore] | None = None
        if self._owns_root:
            # Like TemporaryDirectory: a store garbage-collected or still open at interpreter
            # exit does not leave its directory behind (which on /dev/shm would hold RAM).
            self._remove_root = weakref.finalize(self, _remove_tree, self._root, os.getpid())
        # Symlinks above the root are the user's business; only those below it are refused.
        self._real_root = os.path.realpath(self._root)
        self._closed = False
        #: key prefix -> (directory, (inode, device)) of directories that passed the full check
        self._verified_dirs: dict[str, tuple[str, tuple[int, int]]] = {}

    @property
    def root(self) -> str:
        """The absolute path of the directory holding the objects."""
        return self._root

    # ------------------------------------------------------------------ paths

    def _paths(self, key: str) -> tuple[str, str]:
        """Return ``(object path, its directory)`` for a validated key.

        A directory that passed the full check is remembered with its inode; later keys in it
        only ``lstat`` that directory and compare the inode. A directory swapped for a symlink
        (or moved, or removed and recreated) no longer matches and gets the full check again.

        :raises InvalidKeyError: a segment is too long for the file system, a path component
            below the root is a symlink, or the path resolves outside the root.
        """
        dir_key, _, last = key.rpartition("/")
        name = last + _SUFFIX
        if len(name) > _NAME_MAX // 4 and len(name.encode("utf-8")) > _NAME_MAX:
            raise InvalidKeyError(
                f"object key {key!r} has a segment longer than the file store allows "
                f"({_NAME_MAX - len(_SUFFIX)} bytes)"
            )
        known = self._verified_dirs.get(dir_key)
        if known is not None:
            directory, identity = known
            try:
                st = os.lstat(directory)
            except OSError:
                st = None
            if st is not None and (st.st_ino, st.st_dev) == identity and stat.S_ISDIR(st.st_mode):
                return os.path.join(directory, name), directory
            self._verified_dirs.pop(dir_key, None)
        return self._check_paths(key, dir_key, name)

    def _check_paths(self, key: str, dir_key: str, name: str) -> tuple[str, str]:
        """The full check of :meth:`_paths`: every component below the root, then realpath."""
        names = [_dir_name(d) for d in dir_key.split("/")] if dir_key else []
        for segment in names:
            if len(segment.encode("utf-8")) > _NAME_MAX:
                raise InvalidKeyError(
                    f"object key {key!r} has a segment longer than the file store allows "
                    f"({_NAME_MAX - len(_SUFFIX)} bytes)"
                )
        names.append(name)
        path = os.path.join(self._root, *names)
        directory = os.path.dirname(path)
        # Refuse symlinks planted below the root: they could lead anywhere.
        current = self._root
        complete = True
        for segment in names:
            current = os.path.join(current, segment)
            try:
                mode = os.lstat(current).st_mode
            except (FileNotFoundError, NotADirectoryError):
                complete = False
                break  # nothing below a missing component can be a symlink yet
            if stat.S_ISLNK(mode):
                raise InvalidKeyError(
                    f"object key {key!r} goes through a symbolic link ({current}); "
                    "the file store refuses links so that keys cannot leave its root"
                )
        real = os.path.realpath(path)
        if (
            os.path.commonpath([real, self._real_root]) != self._real_root
            or real == self._real_root
        ):
            raise InvalidKeyError(
                f"object key {key!r} resolves outside the store root {self._root}"
            )
        if dir_key and (complete or current == path):
            # every directory component exists and is a real directory: remember it
            try:
                st = os.lstat(directory)
            except OSError:
                return path, directory
            if stat.S_ISDIR(st.st_mode):
                if len(self._verified_dirs) >= _VERIFIED_DIRS_MAX:
                    self._verified_dirs.clear()
                self._verified_dirs[dir_key] = (directory, (st.st_ino, st.st_dev))
        return path, directory

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceUnavailableError(
                f"this FileObjectStore (root {self._root}) was closed", provider=self.name
            )

    def _not_found(self, key: str) -> NotFoundError:
        return NotFoundError(f"object {key!r} does not exist in {self._root}", provider=self.name)

    def _open_read(self, key: str) -> int:
        path, _ = self._paths(key)
        try:
            return os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise self._not_found(key) from None
        except OSError as exc:
            if stat.S_ISLNK(_lstat_mode(path)):
                raise InvalidKeyError(f"object key {key!r} is a symbolic link; refused") from exc
            raise

    # ------------------------------------------------------------------ primitives

    def put(
        self, key: str, data: bytes | bytearray | memoryview, *, if_absent: bool = False
    ) -> None:
        """Store ``data`` under ``key``, replacing any previous object atomically.

        :param key: the object key.
        :param data: the bytes to store (bytes, bytearray or memoryview).
        :param if_absent: write only if no object has that key (atomic, via ``os.link``).
        :raises InvalidKeyError: ``key`` is invalid or would leave the root.
        :raises AlreadyExistsError: ``if_absent`` is true and the key exists.
        :raises ServiceUnavailableError: the store was closed and its temporary root removed.
        """
        key = validate_key(key)
        view = byte_view(data)
        self._check_open()
        path, directory = self._paths(key)
        fd, tmp = self._make_temp(directory)
        try:
            with open(fd, "wb", buffering=0, closefd=True) as f:
                written = 0
                total = len(view)
                while written < total:
                    written += f.write(view[written:]) or 0
            if if_absent:
                try:
                    os.link(tmp, path)  # fails atomically when the name exists
                except FileExistsError:
                    raise AlreadyExistsError(
                        f"object {key!r} already exists in {self._root}", provider=self.name
                    ) from None
                os.unlink(tmp)
            else:
                os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def _make_temp(self, directory: str) -> tuple[int, str]:
        """Create a temporary file in ``directory`` (creating the directory as needed).

        A concurrent :meth:`delete` may prune the (still empty) directory between our
        ``makedirs`` and the creation of the temporary file; once that file exists the
        directory is not empty and survives, so retrying converges.
        """
        for _ in range(_MAKEDIRS_ATTEMPTS):
            try:
                return tempfile.mkstemp(prefix=_TMP_PREFIX, dir=directory)
            except FileNotFoundError:
                pass
            if not os.path.isdir(self._root):
                raise ServiceUnavailableError(
                    f"the file store root {self._root} no longer exists", provider=self.name
                )
            try:
                os.makedirs(directory, exist_ok=True)
            except (FileNotFoundError, FileExistsError):
                # A parent was pruned mid-way (FileExistsError: makedirs saw EEXIST, then the
                # directory was gone by the time it checked isdir): try again.
                pass
        raise ServiceUnavailableError(
            f"could not create directory {directory}: it kept being removed concurrently",
            provider=self.name,
        )

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """Return the object's bytes, or ``data[start:end]`` (read with one ``pread``).

        :param key: the object key.
        :param start: first byte (inclusive), ``None`` for the beginning.
        :param end: end byte (exclusive, clamped to the size), ``None`` for the end.
        :raises InvalidKeyError: ``key`` is invalid or would leave the root.
        :raises ValueError: a bound is negative.
        :raises NotFoundError: the key does not exist.
        """
        key = validate_key(key)
        self._check_range(start, end)
        self._check_open()
        fd = self._open_read(key)
        try:
            size = os.fstat(fd).st_size
            lo, hi = clamp_range(start, end, size)
            if hi <= lo:
                return b""
            # Objects are replaced by rename, never rewritten in place, so the open file keeps
            # its size and a short read only happens if someone edits the file behind our back.
            data = os.pread(fd, hi - lo, lo)
            if len(data) == hi - lo:
                return data
            parts = [data]
            got = len(data)
            while got < hi - lo:
                chunk = os.pread(fd, hi - lo - got, lo + got)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
            return b"".join(parts)
        finally:
            os.close(fd)

    def head(self, key: str) -> ObjectInfo:
        """Return the object's size and modification time.

        :param key: the object key.
        :raises InvalidKeyError: ``key`` is invalid or would leave the root.
        :raises NotFoundError: the key does not exist.
        """
        key = validate_key(key)
        self._check_open()
        path, _ = self._paths(key)
        try:
            st = os.stat(path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            raise self._not_found(key) from None
        if not stat.S_ISREG(st.st_mode):
            raise self._not_found(key)
        return ObjectInfo(key=key, size=st.st_size, last_modified=st.st_mtime)

    def delete(self, key: str) -> None:
        """Delete the object and prune the directories it leaves empty.

        :param key: the object key.
        :raises InvalidKeyError: ``key`` is invalid or would leave the root.
        :raises NotFoundError: the key does not exist.
        """
        key = validate_key(key)
        self._check_open()
        path, directory = self._paths(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            raise self._not_found(key) from None
        # rmdir is atomic and fails on a non-empty directory, so a writer that already created
        # its temporary file is safe; one that has not yet retries (see _make_temp).
        while directory != self._root and directory.startswith(self._root + os.sep):
            try:
                os.rmdir(directory)
            except OSError:
                break
            directory = os.path.dirname(directory)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix``, sorted by key.

        Only the directory that the prefix designates is walked, not the whole root. Objects
        written or deleted during the iteration may or may not appear.

        :param prefix: a plain string prefix (``"a/b"`` matches ``"a/bc"`` and ``"a/b/c"``).
        """
        self._check_open()
        *dirs, partial = str(prefix).split("/")
        if any(d in ("", ".", "..") or _UNSAFE_CHAR.search(d) for d in dirs):
            return  # no valid key has such a segment, and we must not walk outside the root
        base = self._root
        for d in dirs:
            base = os.path.join(base, _dir_name(d))
            if not stat.S_ISDIR(_lstat_mode(base)):  # missing, or a symlink we refuse to follow
                return
        key_base = "".join(d + "/" for d in dirs)
        yield from self._walk(base, key_base, partial)

    def _walk(self, directory: str, key_base: str, partial: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects under ``directory`` whose next segment starts with ``partial``.

        Within a directory the object ``x`` sorts as ``"x"`` and the subdirectory ``x`` as
        ``"x/"``; every key below ``x/`` sorts between ``"x/"`` and the next sibling, so visiting
        siblings in that order yields keys globally sorted without holding the whole listing.
        """
        entries: builtins.list[tuple[str, os.DirEntry[str], bool]] = []
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            segment = _segment_of_dir(entry.name)
                            if segment.startswith(partial):
                                entries.append((segment + "/", entry, True))
                        elif entry.name.endswith(_SUFFIX) and entry.is_file(follow_symlinks=False):
                            # .tmp-* files never end in .obj: writers in progress stay hidden.
                            segment = entry.name[: -len(_SUFFIX)]
                            if segment.startswith(partial):
                                entries.append((segment, entry, False))
                    except OSError:
                        continue  # removed while we looked at it
        except (FileNotFoundError, NotADirectoryError):
            return  # pruned by a concurrent delete
        entries.sort(key=lambda item: item[0])
        for sort_key, entry, is_dir in entries:
            if is_dir:
                yield from self._walk(entry.path, key_base + sort_key)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # deleted since the scan
            yield ObjectInfo(key=key_base + sort_key, size=st.st_size, last_modified=st.st_mtime)

    # ------------------------------------------------------------------ lifecycle

    def to_config(self) -> dict[str, Any]:
        """Return ``{"root": <absolute path>}``.

        A store rebuilt from it shares the objects but does not own the directory: closing it
        leaves the directory in place.
        """
        return {"root": self._root}

    def close(self) -> None:
        """Remove the root if this store created it (``root=None``). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._remove_root is not None:
            self._remove_root()

    def __repr__(self) -> str:
        return f"FileObjectStore(root={self._root!r})"


def _remove_tree(path: str, owner_pid: int) -> None:
    """Remove a temporary root, unless we are a forked copy of the process that created it."""
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)


def _lstat_mode(path: str) -> int:
    """Return the ``st_mode`` of ``path`` itself (not following links), or 0 if it is missing."""
    try:
        return os.lstat(path).st_mode
    except OSError:
        return 0
