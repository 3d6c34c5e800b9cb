"""Blocked matrices in an :class:`~faasml.interfaces.ObjectStore`, one object per block.

A :class:`BlockMatrix` named ``N`` under the key prefix ``P`` is stored as::

    P/N/header.json      {"format": "faasml.blockmatrix", "version": 1, "shape": [m, n],
                          "block": [br, bc], "dtype": "float64"}
    P/N/b/<i>_<j>        block (i, j): rows [i*br, min((i+1)*br, m)), cols [j*bc, ...)

Edge blocks are smaller (nothing is padded in storage). Every block object is a 64-byte header
followed by the block's raw little-endian C-order bytes (see :func:`encode_block`); nothing is
pickled, so a worker decodes a block with one ``numpy.frombuffer`` and no copy, and a foreign or
damaged object is refused with :class:`~faasml.errors.DataFormatError` naming its key.

Objects are write-once: blocks are written with ``put(..., if_absent=True)``; writing the same
bytes again is accepted (a replayed task), different bytes raise
:class:`~faasml.errors.AlreadyExistsError`. The header is written last, so it doubles as the
"matrix is complete" marker: :meth:`BlockMatrix.open` of a half-written matrix fails.

Objects of this class hold only metadata (lazy): opening reads the header, blocks are fetched
when used. They pickle without their store (which holds connections); inside a faasml task an
unpickled matrix uses :func:`faasml.runtime.context`'s storage, elsewhere call
:meth:`BlockMatrix.attach`.
"""

from __future__ import annotations

import json
import math
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from faasml.errors import (
    AlreadyExistsError,
    ConfigurationError,
    DataFormatError,
    NotFoundError,
)
from faasml.interfaces import ObjectStore, validate_key

if TYPE_CHECKING:
    from faasml.executor import Cloud

__all__ = [
    "BLOCK_HEADER_BYTES",
    "DEFAULT_PREFIX",
    "BlockMatrix",
    "block_buffer",
    "decode_block",
    "encode_block",
    "normalize_block",
]

Array = npt.NDArray[Any]

#: key prefix under which matrices are stored unless another is given.
DEFAULT_PREFIX = "blockmatrix"
#: version of the header and block formats written by this module.
FORMAT_VERSION = 1
#: size of the fixed block header; a multiple of 64 keeps the data cache-line aligned.
BLOCK_HEADER_BYTES = 64

_FORMAT_NAME = "faasml.blockmatrix"
_MAGIC = b"FMLB"
# magic, format version, dtype code, reserved, rows, cols (little-endian, padded to 64 bytes)
_HEAD = struct.Struct("<4sHBBQQ")
_DTYPE_CODES: dict[str, int] = {"float32": 1, "float64": 2}
_CODE_DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype("<f4"), 2: np.dtype("<f8")}
# Parallel block transfers between the driver and the store: enough to hide per-request latency
# of networked stores, few enough to bound the memory of blocks in flight.
_IO_THREADS = 4


# --------------------------------------------------------------------------- block encoding


def _storage_dtype(dtype: npt.DTypeLike) -> np.dtype[Any]:
    """The little-endian storage dtype for ``dtype``.

    :raises TypeError: ``dtype`` is not float32 or float64.
    """
    dt = np.dtype(dtype)
    if dt.kind != "f" or dt.itemsize not in (4, 8):
        raise TypeError(
            f"BlockMatrix stores float32 or float64 values, not {dt}; convert first, e.g. "
            "array.astype(numpy.float64)"
        )
    return np.dtype("<f4") if dt.itemsize == 4 else np.dtype("<f8")


def block_buffer(rows: int, cols: int, dtype: npt.DTypeLike) -> tuple[memoryview, Array]:
    """Allocate an encoded block and return it with a writable array view of its data part.

    Computing straight into the view saves the copy that encoding a finished array would cost.
    The data part is uninitialized (``numpy.empty``): zero-filling a 128 MiB block costs more
    than copying into it, and every caller overwrites all of it.

    :param rows: block rows.
    :param cols: block columns.
    :param dtype: float32 or float64.
    :returns: ``(buffer, view)``: the bytes to store and the ``(rows, cols)`` array inside them.
    """
    dt = _storage_dtype(dtype)
    raw = np.empty(BLOCK_HEADER_BYTES + rows * cols * dt.itemsize, dtype=np.uint8)
    buf = raw.data
    _HEAD.pack_into(buf, 0, _MAGIC, FORMAT_VERSION, _DTYPE_CODES[dt.name], 0, rows, cols)
    buf[_HEAD.size : BLOCK_HEADER_BYTES] = bytes(BLOCK_HEADER_BYTES - _HEAD.size)
    view = raw[BLOCK_HEADER_BYTES:].view(dt)
    return buf, view.reshape(rows, cols)


def encode_block(array: npt.ArrayLike, dtype: npt.DTypeLike | None = None) -> memoryview:
    """Encode a 2-D array as a block object: the fixed header, then its raw C-order bytes.

    :param array: the block values.
    :param dtype: storage dtype (float32/float64); ``None`` keeps the array's own.
    :raises ValueError: ``array`` is not 2-D.
    :raises TypeError: the dtype is not float32 or float64.
    """
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise ValueError(f"a block must be 2-D, got an array of shape {arr.shape}")
    buf, view = block_buffer(arr.shape[0], arr.shape[1], arr.dtype if dtype is None else dtype)
    np.copyto(view, arr, casting="same_kind")
    return buf


def decode_block(
    data: bytes | bytearray | memoryview,
    *,
    key: str,
    dtype: npt.DTypeLike | None = None,
    shape: tuple[int, int] | None = None,
) -> Array:
    """Decode a block object into a ``(rows, cols)`` array without copying the data.

    :param data: the stored object.
    :param key: its key, for error messages.
    :param dtype: the dtype the matrix header promises, checked when given.
    :param shape: the block shape the matrix header implies, checked when given.
    :returns: an array over ``data`` (read-only when ``data`` is ``bytes``).
    :raises DataFormatError: not a block object, another format version, truncated or padded,
        or a dtype or shape other than the header's; the message names ``key``.
    """
    view = memoryview(data)
    if view.nbytes < BLOCK_HEADER_BYTES:
        raise DataFormatError(
            f"object {key!r} is not a faasml matrix block: {view.nbytes} bytes, shorter than the "
            f"{BLOCK_HEADER_BYTES}-byte block header"
        )
    magic, version, code, _, rows, cols = _HEAD.unpack_from(view, 0)
    if magic != _MAGIC:
        raise DataFormatError(
            f"object {key!r} is not a faasml matrix block (magic {magic!r}, expected {_MAGIC!r})"
        )
    if version != FORMAT_VERSION:
        raise DataFormatError(
            f"block {key!r} has format version {version}; this faasml reads version "
            f"{FORMAT_VERSION}"
        )
    if code not in _CODE_DTYPES:
        raise DataFormatError(f"block {key!r} has an unknown dtype code {code}")
    found = _CODE_DTYPES[code]
    if dtype is not None and found != _storage_dtype(dtype):
        raise DataFormatError(
            f"block {key!r} holds {found.name} values but the matrix header says "
            f"{np.dtype(dtype).name}"
        )
    if shape is not None and (rows, cols) != tuple(shape):
        raise DataFormatError(
            f"block {key!r} has shape ({rows}, {cols}) but the matrix header implies {tuple(shape)}"
        )
    expected = BLOCK_HEADER_BYTES + rows * cols * found.itemsize
    if view.nbytes != expected:
        raise DataFormatError(
            f"block {key!r} is {view.nbytes} bytes but a ({rows}, {cols}) {found.name} block is "
            f"{expected} bytes: the object is truncated or damaged"
        )
    arr = np.frombuffer(data, dtype=found, count=rows * cols, offset=BLOCK_HEADER_BYTES)
    return arr.reshape(rows, cols)


# --------------------------------------------------------------------------- helpers


def normalize_block(block: int | tuple[int, int], shape: tuple[int, int]) -> tuple[int, int]:
    """Validate a block size and clamp it to the matrix.

    Rule: a block larger than the matrix along an axis is clamped to the matrix's size along that
    axis (the matrix then has a single block there), so a default such as 2048 works for any
    matrix. Sizes must be integers >= 1.

    :param block: one size for both axes, or ``(rows, cols)``.
    :param shape: the matrix shape.
    :returns: the ``(rows, cols)`` block shape actually used.
    :raises ValueError: a size is not an integer >= 1 (the message shows the value).
    """
    sizes = (block, block) if not isinstance(block, tuple) else block
    if len(sizes) != 2:
        raise ValueError(f"block must be an int or a (rows, cols) pair, got {block!r}")
    out: list[int] = []
    for size, dim in zip(sizes, shape, strict=True):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"block sizes must be integers >= 1, got {block!r}")
        out.append(max(1, min(int(size), dim)))
    return out[0], out[1]


def _check_name(name: str, what: str = "matrix name") -> str:
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"{what} must be a non-empty string without '/', got {name!r}")
    validate_key(name)
    return name


def _new_name() -> str:
    return "m" + uuid.uuid4().hex[:15]


def put_once(store: ObjectStore, key: str, data: bytes | bytearray | memoryview) -> None:
    """Write a write-once object; writing the identical bytes again is a no-op.

    :raises AlreadyExistsError: ``key`` holds different bytes (objects are never modified).
    """
    try:
        store.put(key, data, if_absent=True)
    except AlreadyExistsError:
        if store.get(key) != data:
            raise AlreadyExistsError(
                f"object {key!r} already exists with different content; matrix objects are "
                "write-once: delete the matrix first or choose another name"
            ) from None


def _index_range(index: slice | None, dim: int, axis: str) -> range:
    if index is None:
        return range(dim)
    if not isinstance(index, slice):
        raise TypeError(f"{axis} must be a slice or None, got {type(index).__name__}")
    return range(*index.indices(dim))


def _run_parallel(fn: Callable[[tuple[int, int]], None], items: list[tuple[int, int]]) -> None:
    """Run ``fn`` over ``items`` on a few threads; the first error is raised."""
    if len(items) <= 1:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(min(_IO_THREADS, len(items))) as pool:
        for _ in pool.map(fn, items):
            pass


# --------------------------------------------------------------------------- the matrix


class BlockMatrix:
    """A 2-D float32/float64 matrix stored block-per-object; see the module docstring.

    Build one with :meth:`from_numpy` or reopen one with :meth:`open`; the constructor only
    describes a layout and touches no storage. ``.T`` is a metadata-only transposed view sharing
    the same objects.

    :param store: the object store holding the matrix (``None``: resolved later, see
        :attr:`store`).
    :param name: the matrix name, one key segment.
    :param shape: the stored matrix's ``(rows, cols)``.
    :param block_shape: the stored matrix's ``(rows, cols)`` block size.
    :param dtype: float32 or float64.
    :param prefix: the key prefix the matrix lives under.
    :param transposed: whether this object is the transposed view of the stored matrix.
    :raises ValueError: a bad name, shape or block shape.
    :raises TypeError: a dtype other than float32/float64.
    """

    def __init__(
        self,
        store: ObjectStore | None,
        name: str,
        shape: tuple[int, int],
        block_shape: tuple[int, int],
        dtype: npt.DTypeLike,
        *,
        prefix: str = DEFAULT_PREFIX,
        transposed: bool = False,
    ) -> None:
        self._store = store
        self._store_name = store.name if store is not None else None
        self.name = _check_name(name)
        self.prefix = prefix.strip("/")
        validate_key(f"{self.prefix}/{self.name}")
        if len(shape) != 2 or any(int(d) < 1 for d in shape):
            raise ValueError(f"a BlockMatrix needs a 2-D shape with sizes >= 1, got {shape}")
        self._shape = (int(shape[0]), int(shape[1]))
        if len(block_shape) != 2 or not all(
            1 <= int(b) <= d for b, d in zip(block_shape, self._shape, strict=True)
        ):
            raise ValueError(
                f"block shape {block_shape} must be >= 1 and <= the shape {shape} on each axis"
            )
        self._block = (int(block_shape[0]), int(block_shape[1]))
        self.dtype: np.dtype[Any] = _storage_dtype(dtype)
        self.transposed = bool(transposed)

    # ---- construction

    @classmethod
    def from_numpy(
        cls,
        store: ObjectStore,
        array: npt.ArrayLike,
        block: int | tuple[int, int] = 2048,
        name: str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
    ) -> BlockMatrix:
        """Store a 2-D array block by block and return the matrix.

        Blocks are written first and the header last, each write-once: calling this again with
        the same name and the same data is a harmless no-op.

        :param store: where to store it.
        :param array: a 2-D float32 or float64 array (other dtypes: convert first).
        :param block: block size, one int or ``(rows, cols)``; clamped to the matrix (see
            :func:`normalize_block`).
        :param name: matrix name (one key segment); ``None`` makes a unique one.
        :param prefix: key prefix.
        :raises ValueError: the array is not 2-D, is empty, or ``block`` is invalid.
        :raises TypeError: the dtype is not float32/float64.
        :raises AlreadyExistsError: a matrix with that name holds different data.
        """
        arr = np.asarray(array)
        if arr.ndim != 2:
            raise ValueError(f"BlockMatrix.from_numpy needs a 2-D array, got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"BlockMatrix cannot store an empty matrix (shape {arr.shape})")
        dtype = _storage_dtype(arr.dtype)
        shape = (arr.shape[0], arr.shape[1])
        matrix = cls(
            store,
            name if name is not None else _new_name(),
            shape,
            normalize_block(block, shape),
            dtype,
            prefix=prefix,
        )

        def write(ij: tuple[int, int]) -> None:
            (r0, r1), (c0, c1) = matrix.row_bounds(ij[0]), matrix.col_bounds(ij[1])
            buf, view = block_buffer(r1 - r0, c1 - c0, dtype)
            np.copyto(view, arr[r0:r1, c0:c1])
            put_once(store, matrix._stored_key(*ij), buf)

        _run_parallel(write, list(matrix.block_indices()))
        matrix._commit()
        return matrix

    @classmethod
    def open(cls, store: ObjectStore, name: str, *, prefix: str = DEFAULT_PREFIX) -> BlockMatrix:
        """Reopen a stored matrix by name; reads only its header.

        :raises NotFoundError: no complete matrix of that name (its header is missing).
        :raises DataFormatError: the header is not a valid BlockMatrix header (names the key).
        """
        key = f"{prefix.strip('/')}/{_check_name(name)}/header.json"
        try:
            raw = store.get(key)
        except NotFoundError as exc:
            raise NotFoundError(
                f"no BlockMatrix named {name!r} under {prefix!r}: header object {key!r} not found "
                "(never stored, deleted, or still being written)",
                provider=exc.provider,
            ) from exc
        try:
            header = json.loads(raw)
            if header.get("format") != _FORMAT_NAME:
                raise ValueError(f"format is {header.get('format')!r}, not {_FORMAT_NAME!r}")
            if header.get("version") != FORMAT_VERSION:
                raise ValueError(f"version {header.get('version')!r} is not {FORMAT_VERSION}")
            shape = (int(header["shape"][0]), int(header["shape"][1]))
            block = (int(header["block"][0]), int(header["block"][1]))
            return cls(store, name, shape, block, header["dtype"], prefix=prefix)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise DataFormatError(f"{key!r} is not a valid BlockMatrix header: {exc}") from exc

    @classmethod
    def _create(
        cls,
        store: ObjectStore | None,
        shape: tuple[int, int],
        block_shape: tuple[int, int],
        dtype: npt.DTypeLike,
        name: str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
    ) -> BlockMatrix:
        """Describe a new matrix whose blocks others will write; :meth:`_commit` finishes it."""
        return cls(
            store,
            name if name is not None else _new_name(),
            shape,
            block_shape,
            dtype,
            prefix=prefix,
        )

    def _header_bytes(self) -> bytes:
        header = {
            "format": _FORMAT_NAME,
            "version": FORMAT_VERSION,
            "shape": list(self._shape),
            "block": list(self._block),
            "dtype": self.dtype.name,
        }
        return json.dumps(header, sort_keys=True).encode()

    def _commit(self) -> None:
        """Write the header: the matrix is complete and can be opened by name."""
        put_once(self.store, self.header_key, self._header_bytes())

    # ---- metadata

    @property
    def store(self) -> ObjectStore:
        """The object store holding the blocks.

        After unpickling, this is the running task's store (:func:`faasml.runtime.context`)
        unless :meth:`attach` bound one.

        :raises RuntimeError: unpickled outside a task and never attached.
        :raises ConfigurationError: the task's store is another backend than the matrix's.
        """
        if self._store is not None:
            return self._store
        from faasml.runtime import context

        try:
            storage = context().storage
        except RuntimeError:
            raise RuntimeError(
                f"BlockMatrix {self.name!r} was unpickled outside a faasml task and has no store: "
                "call .attach(store) or BlockMatrix.open(store, name)"
            ) from None
        if self._store_name is not None and storage.name != self._store_name:
            raise ConfigurationError(
                f"BlockMatrix {self.name!r} lives in a {self._store_name!r} store but this task "
                f"runs with a {storage.name!r} store"
            )
        return storage

    def attach(self, store: ObjectStore) -> BlockMatrix:
        """Return this matrix (same view) bound to ``store``."""
        other = self._copy()
        other._store = store
        other._store_name = store.name
        return other

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of this view."""
        return (self._shape[1], self._shape[0]) if self.transposed else self._shape

    @property
    def block_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of a full (non-edge) block of this view."""
        return (self._block[1], self._block[0]) if self.transposed else self._block

    @property
    def grid(self) -> tuple[int, int]:
        """Number of blocks along each axis of this view."""
        (m, n), (br, bc) = self.shape, self.block_shape
        return math.ceil(m / br), math.ceil(n / bc)

    @property
    def ndim(self) -> int:
        """Always 2."""
        return 2

    @property
    def nbytes(self) -> int:
        """Bytes of matrix data (headers excluded)."""
        return self._shape[0] * self._shape[1] * self.dtype.itemsize

    @property
    def header_key(self) -> str:
        """Key of the JSON header object."""
        return f"{self.prefix}/{self.name}/header.json"

    @property
    def block_prefix(self) -> str:
        """Key prefix shared by every block object of the matrix."""
        return f"{self.prefix}/{self.name}/b/"

    @property
    def T(self) -> BlockMatrix:  # noqa: N802 - numpy's name
        """The transposed view: no data is copied or written."""
        other = self._copy()
        other.transposed = not self.transposed
        return other

    def _copy(self) -> BlockMatrix:
        other = object.__new__(BlockMatrix)
        other.__dict__.update(self.__dict__)
        return other

    def row_bounds(self, i: int) -> tuple[int, int]:
        """``[start, stop)`` rows of block row ``i`` of this view."""
        size, total = self.block_shape[0], self.shape[0]
        if not 0 <= i < self.grid[0]:
            raise IndexError(f"block row {i} out of range for a grid of {self.grid}")
        return i * size, min((i + 1) * size, total)

    def col_bounds(self, j: int) -> tuple[int, int]:
        """``[start, stop)`` columns of block column ``j`` of this view."""
        size, total = self.block_shape[1], self.shape[1]
        if not 0 <= j < self.grid[1]:
            raise IndexError(f"block column {j} out of range for a grid of {self.grid}")
        return j * size, min((j + 1) * size, total)

    def block_extent(self, i: int, j: int) -> tuple[int, int]:
        """``(rows, cols)`` of block ``(i, j)`` of this view (edge blocks are smaller)."""
        (r0, r1), (c0, c1) = self.row_bounds(i), self.col_bounds(j)
        return r1 - r0, c1 - c0

    def block_indices(self) -> Iterator[tuple[int, int]]:
        """Every ``(i, j)`` block index of this view, row-major."""
        for i in range(self.grid[0]):
            for j in range(self.grid[1]):
                yield i, j

    def _stored_key(self, si: int, sj: int) -> str:
        return f"{self.prefix}/{self.name}/b/{si}_{sj}"

    def block_key(self, i: int, j: int) -> str:
        """Key of the object holding block ``(i, j)`` of this view."""
        self.row_bounds(i), self.col_bounds(j)  # range checks
        return self._stored_key(j, i) if self.transposed else self._stored_key(i, j)

    # ---- block I/O

    def get_block(self, i: int, j: int) -> Array:
        """Read block ``(i, j)`` of this view (read-only; a transposed view of the stored block).

        :raises NotFoundError: the block object is missing; the message names the key.
        :raises DataFormatError: the object is not a valid block of this matrix.
        """
        key = self.block_key(i, j)
        rows, cols = self.block_extent(i, j)
        stored = (cols, rows) if self.transposed else (rows, cols)
        try:
            data = self.store.get(key)
        except NotFoundError as exc:
            raise NotFoundError(
                f"block ({i}, {j}) of matrix {self.name!r} is missing: object {key!r} does not "
                "exist in the store",
                provider=exc.provider,
            ) from exc
        arr = decode_block(data, key=key, dtype=self.dtype, shape=stored)
        return arr.T if self.transposed else arr

    def put_block(self, i: int, j: int, array: npt.ArrayLike) -> None:
        """Write block ``(i, j)`` of this view, once.

        :raises ValueError: the array's shape is not the block's.
        :raises AlreadyExistsError: the block exists with different content.
        """
        arr = np.asarray(array)
        if arr.shape != self.block_extent(i, j):
            raise ValueError(
                f"block ({i}, {j}) of matrix {self.name!r} has shape {self.block_extent(i, j)}, "
                f"got an array of shape {arr.shape}"
            )
        put_once(
            self.store,
            self.block_key(i, j),
            encode_block(arr.T if self.transposed else arr, self.dtype),
        )

    def to_numpy(self, rows: slice | None = None, cols: slice | None = None) -> Array:
        """Return the matrix (or ``[rows, cols]`` of it) as a numpy array.

        Only the blocks that the requested range touches are read.

        :param rows: rows to return, as a slice (``None``: all).
        :param cols: columns to return, as a slice (``None``: all).
        :raises NotFoundError: a needed block is missing (names the key).
        :raises DataFormatError: a needed block is damaged (names the key).
        """
        row_idx = _index_range(rows, self.shape[0], "rows")
        col_idx = _index_range(cols, self.shape[1], "cols")
        if len(row_idx) == 0 or len(col_idx) == 0:
            return np.empty((len(row_idx), len(col_idx)), dtype=self.dtype)
        r_lo, r_hi = min(row_idx), max(row_idx) + 1
        c_lo, c_hi = min(col_idx), max(col_idx) + 1
        dense = self._read_range(r_lo, r_hi, c_lo, c_hi)
        if row_idx.step == 1 and col_idx.step == 1:
            return dense
        return np.ascontiguousarray(
            dense[np.asarray(row_idx) - r_lo][:, np.asarray(col_idx) - c_lo]
        )

    def _read_range(self, r_lo: int, r_hi: int, c_lo: int, c_hi: int) -> Array:
        br, bc = self.block_shape
        out = np.empty((r_hi - r_lo, c_hi - c_lo), dtype=self.dtype)
        blocks = [
            (i, j)
            for i in range(r_lo // br, (r_hi - 1) // br + 1)
            for j in range(c_lo // bc, (c_hi - 1) // bc + 1)
        ]

        def read(ij: tuple[int, int]) -> None:
            (r0, r1), (c0, c1) = self.row_bounds(ij[0]), self.col_bounds(ij[1])
            block = self.get_block(*ij)
            top, bottom = max(r0, r_lo), min(r1, r_hi)
            left, right = max(c0, c_lo), min(c1, c_hi)
            out[top - r_lo : bottom - r_lo, left - c_lo : right - c_lo] = block[
                top - r0 : bottom - r0, left - c0 : right - c0
            ]

        _run_parallel(read, blocks)
        return out

    def delete(self) -> int:
        """Delete every object of the stored matrix (shared by all its views).

        :returns: how many objects were deleted.
        """
        return self.store.delete_prefix(f"{self.prefix}/{self.name}/")

    # ---- arithmetic

    def add(
        self, other: BlockMatrix, *, cloud: Cloud | None = None, name: str | None = None
    ) -> BlockMatrix:
        """Elementwise ``self + other`` as a new write-once matrix in the same store.

        The result has this view's block shape and dtype ``numpy.result_type`` of both. Blocks of
        ``other`` need not line up with ours: each output block reads only what it overlaps.
        With ``cloud`` the blocks are computed as tasks on it (its storage must be this store);
        without, in this process.

        :raises ValueError: the shapes differ (the message shows both).
        """
        if not isinstance(other, BlockMatrix):
            raise TypeError(f"can only add a BlockMatrix, not {type(other).__name__}")
        if other.shape != self.shape:
            raise ValueError(f"cannot add matrices of shapes {self.shape} and {other.shape}")
        dtype = np.result_type(self.dtype, other.dtype)
        return _elementwise("add", 1.0, self, other, dtype, cloud, name)

    def scale(
        self, alpha: float, *, cloud: Cloud | None = None, name: str | None = None
    ) -> BlockMatrix:
        """``alpha * self`` as a new write-once matrix (same dtype) in the same store.

        :param alpha: a real number.
        :param cloud: run the blocks as tasks on this cloud; ``None``: in this process.
        :raises TypeError: ``alpha`` is not a real number.
        """
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
            raise TypeError(f"can only scale by a real number, not {type(alpha).__name__}")
        return _elementwise("scale", float(alpha), self, None, self.dtype, cloud, name)

    def matmul(
        self, other: BlockMatrix, *, cloud: Cloud | None = None, **options: Any
    ) -> BlockMatrix:
        """``self @ other`` as a new write-once matrix in the same store.

        :param other: the right operand, with the same block size along k.
        :param cloud: where the GEMM workers run; ``None``: a ``local`` cloud on this store.
        :param options: see :func:`faasml.algorithms.gemm.matmul` (``name``, ``fuse``,
            ``timeout`` ...).
        :raises ValueError: the shapes are not aligned (both are named).
        """
        from faasml.algorithms.gemm import matmul

        return matmul(self, other, cloud=cloud, **options)

    def __add__(self, other: object) -> BlockMatrix:
        if not isinstance(other, BlockMatrix):
            return NotImplemented
        return self.add(other)

    def __mul__(self, alpha: object) -> BlockMatrix:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
            return NotImplemented
        return self.scale(float(alpha))

    __rmul__ = __mul__

    def __matmul__(self, other: object) -> BlockMatrix:
        if not isinstance(other, BlockMatrix):
            return NotImplemented
        return self.matmul(other)

    # ---- pickling and display

    def __getstate__(self) -> dict[str, Any]:
        # Stores hold sockets, locks and threads; a worker uses its own store (see ``store``).
        state = dict(self.__dict__)
        state["_store"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        view = ".T" if self.transposed else ""
        return (
            f"BlockMatrix(name={self.name!r}{view}, shape={self.shape}, "
            f"block_shape={self.block_shape}, dtype={self.dtype.name})"
        )


# --------------------------------------------------------------------------- elementwise ops


def _elementwise_blocks(
    kind: str,
    alpha: float,
    left: BlockMatrix,
    right: BlockMatrix | None,
    out: BlockMatrix,
    blocks: Iterable[tuple[int, int]],
) -> int:
    """Compute and write output blocks of an elementwise op; returns how many were written."""
    count = 0
    for i, j in blocks:
        rows, cols = out.row_bounds(i), out.col_bounds(j)
        x = _overlap(left, rows, cols)
        buf, view = block_buffer(rows[1] - rows[0], cols[1] - cols[0], out.dtype)
        if kind == "scale":
            np.multiply(x, alpha, out=view, casting="same_kind")
        else:
            assert right is not None
            np.add(x, _overlap(right, rows, cols), out=view, casting="same_kind")
        put_once(out.store, out.block_key(i, j), buf)
        count += 1
    return count


def _overlap(matrix: BlockMatrix, rows: tuple[int, int], cols: tuple[int, int]) -> Array:
    """``matrix[rows, cols]``, zero-copy when it is exactly one of the matrix's blocks."""
    br, bc = matrix.block_shape
    i, j = rows[0] // br, cols[0] // bc
    if (
        rows[0] % br == 0
        and cols[0] % bc == 0
        and (rows, cols)
        == (
            matrix.row_bounds(i),
            matrix.col_bounds(j),
        )
    ):
        return matrix.get_block(i, j)
    return matrix.to_numpy(rows=slice(*rows), cols=slice(*cols))


def _elementwise_task(
    kind: str,
    alpha: float,
    left: BlockMatrix,
    right: BlockMatrix | None,
    out: BlockMatrix,
    blocks: list[tuple[int, int]],
) -> int:
    """Task body: the matrices were unpickled here, so they use the task's store."""
    return _elementwise_blocks(kind, alpha, left, right, out, blocks)


def _elementwise(
    kind: str,
    alpha: float,
    left: BlockMatrix,
    right: BlockMatrix | None,
    dtype: np.dtype[Any],
    cloud: Cloud | None,
    name: str | None,
) -> BlockMatrix:
    store = left.store
    if right is not None and right._store is not None and right.store is not store:
        if (right.store.name, right.store.to_config()) != (store.name, store.to_config()):
            raise ValueError("both matrices of an elementwise operation must be in the same store")
    out = BlockMatrix._create(store, left.shape, left.block_shape, dtype, name, prefix=left.prefix)
    blocks = list(out.block_indices())
    if cloud is None:

        def one(ij: tuple[int, int]) -> None:
            _elementwise_blocks(kind, alpha, left, right, out, [ij])

        _run_parallel(one, blocks)
    else:
        if (cloud.storage.name, cloud.storage.to_config()) != (store.name, store.to_config()):
            raise ValueError(
                f"matrix {left.name!r} is in a {store.name!r} store that is not the cloud's "
                f"{cloud.storage.name!r} storage; tasks could not reach its blocks"
            )
        slots = max(1, min(len(blocks), 4 * max(1, cloud.function.concurrency)))
        chunks = [blocks[s::slots] for s in range(slots)]
        futures = cloud.map_futures(
            _elementwise_task,
            [kind] * slots,
            [alpha] * slots,
            [left] * slots,
            [right] * slots,
            [out] * slots,
            chunks,
        )
        for future in futures:
            future.result()
    out._commit()
    return out
