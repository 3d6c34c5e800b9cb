"""The ``s3`` :class:`~faasml.interfaces.ObjectStore`: AWS S3 and S3-compatible endpoints.

The object ``key`` is the S3 object ``<prefix><key>`` in one bucket. Anything that speaks the S3
API works through ``endpoint_url`` (MinIO, Ceph RGW, moto ...). Requests use botocore's adaptive
retry mode, which backs off on throttling and rate-limits the client itself.

How the contract maps onto S3:

* ``put`` is one ``PutObject`` (S3 replaces objects atomically); objects larger than
  ``multipart_threshold`` are uploaded in parts (up to four in parallel), and an upload that
  fails is aborted so that no orphaned parts keep costing storage.
* ``put(if_absent=True)`` is an S3 conditional write (``If-None-Match: *`` on ``PutObject`` or on
  ``CompleteMultipartUpload``): atomic on S3 itself; S3 answers ``412 PreconditionFailed`` when the
  key exists, raised as :class:`~faasml.errors.AlreadyExistsError`. A ``409
  ConditionalRequestConflict`` (another conditional write in flight) is retried.
  S3-compatible servers that ignore ``If-None-Match`` make this check ineffective; moto honours it.
* ``get`` with a range sends ``Range: bytes=start-(end-1)``. An empty range is answered without
  reading (after a ``HEAD``, so a missing key still raises), and S3's ``416 InvalidRange`` for a
  range starting at or past the end means ``b""``, as slicing gives.
* ``delete`` checks with ``HEAD`` first, because S3's ``DeleteObject`` succeeds on missing keys.
* ``delete_prefix`` deletes in batches of 1000 keys (``DeleteObjects``).
* ``list`` pages through ``ListObjectsV2``, which S3 returns in UTF-8 binary order, the same order
  as sorting the Python strings.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, ClassVar, TypeVar

from faasml.errors import ConfigurationError, InvalidKeyError, NotFoundError, ProviderError
from faasml.interfaces import ObjectInfo, ObjectStore, validate_key
from faasml.storage._aws_errors import (
    SecretValue,
    aws_clients,
    aws_credentials,
    error_from_code,
    map_aws_errors,
    secrets_for_config,
)
from faasml.storage._common import byte_view, is_empty_range, range_spec

__all__ = ["S3ObjectStore"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

_MIB = 1024 * 1024
#: S3 refuses parts smaller than this (except the last one) and larger than 5 GiB.
_MIN_PART = 5 * _MIB
_MAX_PART = 5 * 1024 * _MIB
#: S3 accepts at most this many parts per upload; larger objects get larger parts.
_MAX_PARTS = 10_000
#: parts uploaded at once by one ``put``.
_PART_WORKERS = 4
#: ``DeleteObjects`` takes at most this many keys.
_DELETE_BATCH = 1000
#: tries of a conditional write that S3 reports as conflicting with another one in flight.
_CONFLICT_ATTEMPTS = 5


class S3ObjectStore(ObjectStore):
    """Objects in an S3 bucket (or any S3-compatible server), under an optional key prefix.

    :param bucket: the bucket name.
    :param prefix: prepended to every key (``"jobs/"`` stores ``a`` as ``jobs/a``).
    :param region: AWS region; ``None`` uses the boto3 default (``AWS_DEFAULT_REGION``, profile).
    :param endpoint_url: URL of an S3-compatible server; ``None`` is AWS S3 (or
        ``AWS_ENDPOINT_URL``).
    :param access_key_id: ``None`` uses the default credential chain (environment, profile,
        IAM role); otherwise a string or ``{"$env": "VAR"}``.
    :param secret_access_key: like ``access_key_id``.
    :param session_token: like ``access_key_id``, for temporary credentials.
    :param create_bucket: create the bucket if it does not exist.
    :param multipart_threshold: objects larger than this many bytes are uploaded in parts.
    :param multipart_chunk: part size in bytes (at least 5 MiB, S3's minimum).
    :param max_attempts: attempts per request, including the first (botocore adaptive retries).
    :param client: a prebuilt boto3 S3 client to use instead of building one (tests); the store
        does not close it, and :meth:`to_config` does not describe it.
    :raises ConfigurationError: an invalid option, or an ``$env`` credential that is not set.
    """

    name: ClassVar[str] = "s3"
    supports_range_get: bool = True
    supports_conditional_put: bool = True

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        region: str | None = None,
        endpoint_url: str | None = None,
        access_key_id: SecretValue = None,
        secret_access_key: SecretValue = None,
        session_token: SecretValue = None,
        create_bucket: bool = False,
        multipart_threshold: int = 64 * _MIB,
        multipart_chunk: int = 16 * _MIB,
        max_attempts: int = 5,
        client: Any = None,
    ) -> None:
        if not isinstance(bucket, str) or not bucket:
            raise ConfigurationError(f"bucket must be a non-empty string, got {bucket!r}")
        if prefix:
            try:
                validate_key(prefix + "x")
            except InvalidKeyError as exc:
                raise ConfigurationError(
                    f"prefix {prefix!r} would make invalid keys: {exc}; use e.g. 'jobs/'"
                ) from None
        if not _MIN_PART <= multipart_chunk <= _MAX_PART:
            raise ConfigurationError(
                f"multipart_chunk must be between {_MIN_PART} (5 MiB, the S3 minimum part size) "
                f"and {_MAX_PART} bytes, got {multipart_chunk}"
            )
        if multipart_threshold < 1:
            raise ConfigurationError(
                f"multipart_threshold must be >= 1 byte, got {multipart_threshold}"
            )
        if max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be >= 1, got {max_attempts}")
        self._bucket = bucket
        self._prefix = prefix
        self._endpoint_url = endpoint_url
        self._secrets = aws_credentials(access_key_id, secret_access_key, session_token)
        self._threshold = int(multipart_threshold)
        self._chunk = int(multipart_chunk)
        self._max_attempts = int(max_attempts)
        self._owns_client = client is None
        if client is None:
            client = aws_clients(
                self.name,
                f"S3 client for bucket {bucket!r}",
                ("s3",),
                region=region,
                endpoint_url=endpoint_url,
                credentials=self._secrets,
                max_attempts=self._max_attempts,
                # user threads plus the multipart workers share the pool
                max_pool_connections=32,
            )["s3"]
        self._client = client
        # Pin the region a rebuilt store uses: the bucket lives in one region, whatever the
        # environment of the process that rebuilds the store says.
        self._region: str | None = region or client.meta.region_name
        self._closed = False
        # Set once the bucket is known to exist: a 404 from HEAD is then about the key.
        self._bucket_seen = False
        if create_bucket:
            self._create_bucket()

    # ------------------------------------------------------------------ helpers

    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self._bucket

    @property
    def prefix(self) -> str:
        """The prefix prepended to every key."""
        return self._prefix

    def _where(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}"

    def _object(self, key: str) -> str:
        return f"object {key!r} in {self._where()}"

    def _bucket_missing(self) -> str:
        where = f" at {self._endpoint_url}" if self._endpoint_url else ""
        return (
            f"bucket {self._bucket!r} does not exist{where}; create it (aws s3 mb "
            f"s3://{self._bucket}) or pass create_bucket=True"
        )

    def _call(self, resource: str, call: Callable[[], _T], *, key: str | None = None) -> _T:
        """Run one boto3 call with its errors translated; ``key`` names the object in messages."""
        messages = {"NoSuchBucket": self._bucket_missing()}
        if key is not None:
            messages["NoSuchKey"] = f"object {key!r} does not exist in {self._where()}"
            messages["PreconditionFailed"] = f"object {key!r} already exists in {self._where()}"
        with map_aws_errors(self.name, resource, messages=messages):
            return call()

    def _check_bucket(self, cause: NotFoundError) -> None:
        """After an ambiguous 404 (HEAD has no error body), raise the bucket error if it is that."""
        if self._bucket_seen:
            return
        try:
            self._call(
                f"bucket {self._bucket!r}", lambda: self._client.head_bucket(Bucket=self._bucket)
            )
        except NotFoundError:
            raise NotFoundError(
                self._bucket_missing(), provider=self.name, code="NoSuchBucket", status=404
            ) from cause
        self._bucket_seen = True

    def _create_bucket(self) -> None:
        kwargs: dict[str, Any] = {"Bucket": self._bucket}
        if self._region and self._region != "us-east-1":
            # us-east-1 is the one region that refuses an explicit location constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            self._call(
                f"bucket {self._bucket!r}",
                lambda: self._client.create_bucket(**kwargs),
            )
        except ProviderError as exc:
            if exc.code == "BucketAlreadyOwnedByYou":
                return
            if exc.code == "BucketAlreadyExists":
                raise type(exc)(
                    f"bucket name {self._bucket!r} is taken by another AWS account (bucket "
                    f"names are global); choose another name ({exc})",
                    provider=self.name,
                    code=exc.code,
                    status=exc.status,
                    request_id=exc.request_id,
                ) from exc
            raise
        self._bucket_seen = True

    def _conditional(self, resource: str, call: Callable[[], _T], key: str) -> _T:
        """Run a conditional write, retrying S3's transient 409 ConditionalRequestConflict."""
        for attempt in range(_CONFLICT_ATTEMPTS - 1):
            try:
                return self._call(resource, call, key=key)
            except ProviderError as exc:
                if exc.code != "ConditionalRequestConflict":
                    raise
            time.sleep(0.05 * 2**attempt)
        return self._call(resource, call, key=key)

    # ------------------------------------------------------------------ primitives

    def put(
        self, key: str, data: bytes | bytearray | memoryview, *, if_absent: bool = False
    ) -> None:
        """Store ``data`` under ``key``, replacing any previous object atomically.

        :param key: the object key.
        :param data: the bytes to store.
        :param if_absent: write only if no object has that key (an atomic S3 conditional write).
        :raises InvalidKeyError: ``key`` is invalid.
        :raises AlreadyExistsError: ``if_absent`` is true and the key exists.
        :raises NotFoundError: the bucket does not exist.
        """
        key = validate_key(key)
        view = byte_view(data)
        full = self._prefix + key
        condition: dict[str, Any] = {"IfNoneMatch": "*"} if if_absent else {}
        if view.nbytes > self._threshold:
            self._put_multipart(key, full, view, condition)
            return
        # bytes are immutable; other buffers are copied, since the caller may reuse them at once
        body = data if isinstance(data, bytes) else view.tobytes()
        self._conditional(
            f"put {self._object(key)}",
            lambda: self._client.put_object(Bucket=self._bucket, Key=full, Body=body, **condition),
            key,
        )

    def _put_multipart(
        self, key: str, full: str, view: memoryview, condition: dict[str, Any]
    ) -> None:
        size = view.nbytes
        chunk = max(self._chunk, -(-size // _MAX_PARTS))
        resource = f"multipart upload of {self._object(key)}"
        created = self._call(
            resource,
            lambda: self._client.create_multipart_upload(Bucket=self._bucket, Key=full),
            key=key,
        )
        upload_id = str(created["UploadId"])
        ranges = [
            (number, offset, min(offset + chunk, size))
            for number, offset in enumerate(range(0, size, chunk), start=1)
        ]

        def upload(part: tuple[int, int, int]) -> dict[str, Any]:
            number, lo, hi = part
            response = self._call(
                resource,
                lambda: self._client.upload_part(
                    Bucket=self._bucket,
                    Key=full,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=view[lo:hi].tobytes(),
                ),
                key=key,
            )
            return {"PartNumber": number, "ETag": response["ETag"]}

        try:
            with ThreadPoolExecutor(
                max_workers=min(_PART_WORKERS, len(ranges)), thread_name_prefix="faasml-s3-part"
            ) as pool:
                parts = builtins.list(pool.map(upload, ranges))
            self._conditional(
                resource,
                lambda: self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **condition,
                ),
                key,
            )
        except BaseException:
            # Parts of an unfinished upload are billed until aborted.
            try:
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=full, UploadId=upload_id
                )
            except Exception:
                _log.warning(
                    "could not abort multipart upload %s of %s; its parts stay billed until a "
                    "bucket lifecycle rule removes them",
                    upload_id,
                    self._object(key),
                    exc_info=True,
                )
            raise

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """Return the object's bytes, or ``data[start:end]`` (one ranged ``GetObject``).

        :param key: the object key.
        :param start: first byte (inclusive), ``None`` for the beginning.
        :param end: end byte (exclusive, clamped to the size), ``None`` for the end.
        :raises InvalidKeyError: ``key`` is invalid.
        :raises ValueError: a bound is negative.
        :raises NotFoundError: the key (or the bucket) does not exist.
        """
        key = validate_key(key)
        self._check_range(start, end)
        if is_empty_range(start, end):
            self.head(key)  # a missing key raises, as a read of it would
            return b""
        lo = start or 0
        extra: dict[str, Any] = {}
        if lo > 0 or end is not None:
            extra["Range"] = f"bytes={range_spec(lo, end)}"
        full = self._prefix + key

        def read() -> bytes:
            response = self._client.get_object(Bucket=self._bucket, Key=full, **extra)
            return bytes(response["Body"].read())

        try:
            return self._call(f"get {self._object(key)}", read, key=key)
        except ProviderError as exc:
            if exc.code == "InvalidRange":
                return b""  # the range starts at or past the end: slicing gives b"" too
            raise

    def head(self, key: str) -> ObjectInfo:
        """Return the object's size, modification time and ETag.

        :param key: the object key.
        :raises InvalidKeyError: ``key`` is invalid.
        :raises NotFoundError: the key (or the bucket) does not exist.
        """
        key = validate_key(key)
        full = self._prefix + key
        try:
            response = self._call(
                f"head {self._object(key)}",
                lambda: self._client.head_object(Bucket=self._bucket, Key=full),
                key=key,
            )
        except NotFoundError as exc:
            self._check_bucket(exc)
            raise NotFoundError(
                f"object {key!r} does not exist in {self._where()}",
                provider=self.name,
                code=exc.code,
                status=exc.status,
                request_id=exc.request_id,
            ) from exc
        self._bucket_seen = True
        modified = response.get("LastModified")
        etag = response.get("ETag")
        return ObjectInfo(
            key=key,
            size=int(response.get("ContentLength", 0)),
            last_modified=modified.timestamp() if modified is not None else None,
            etag=str(etag).strip('"') if etag else None,
        )

    def delete(self, key: str) -> None:
        """Delete the object.

        :param key: the object key.
        :raises InvalidKeyError: ``key`` is invalid.
        :raises NotFoundError: the key (or the bucket) does not exist.
        """
        key = validate_key(key)
        self.head(key)  # S3 deletes are idempotent; the contract wants missing keys reported
        full = self._prefix + key
        self._call(
            f"delete {self._object(key)}",
            lambda: self._client.delete_object(Bucket=self._bucket, Key=full),
            key=key,
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix``, sorted by key.

        :param prefix: a plain string prefix (``"a/b"`` matches ``"a/bc"`` and ``"a/b/c"``).
        :raises NotFoundError: the bucket does not exist.
        """
        full_prefix = self._prefix + str(prefix)
        resource = f"list {self._where()}{prefix}"
        token: str | None = None
        while True:
            extra: dict[str, Any] = {"ContinuationToken": token} if token else {}
            page = self._call(
                resource,
                partial(
                    self._client.list_objects_v2, Bucket=self._bucket, Prefix=full_prefix, **extra
                ),
            )
            for item in page.get("Contents", ()):
                modified = item.get("LastModified")
                etag = item.get("ETag")
                yield ObjectInfo(
                    key=str(item["Key"])[len(self._prefix) :],
                    size=int(item.get("Size", 0)),
                    last_modified=modified.timestamp() if modified is not None else None,
                    etag=str(etag).strip('"') if etag else None,
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    # ------------------------------------------------------------------ derived, overridden

    def exists(self, key: str) -> bool:
        """Return whether ``key`` exists.

        :raises NotFoundError: the bucket does not exist (that is not an absent key).
        """
        try:
            self.head(key)
        except NotFoundError as exc:
            if exc.code == "NoSuchBucket":
                raise
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` with batched ``DeleteObjects`` calls.

        :param prefix: a plain string prefix.
        :returns: how many objects were deleted.
        :raises ProviderError: S3 refused to delete some key (the first failure is raised).
        """
        count = 0
        batch: builtins.list[str] = []
        for info in self.list(prefix):
            batch.append(info.key)
            if len(batch) == _DELETE_BATCH:
                count += self._delete_batch(batch)
                batch = []
        if batch:
            count += self._delete_batch(batch)
        return count

    def _delete_batch(self, keys: builtins.list[str]) -> int:
        objects = [{"Key": self._prefix + k} for k in keys]
        response = self._call(
            f"delete {len(keys)} objects under {self._where()}",
            lambda: self._client.delete_objects(
                Bucket=self._bucket, Delete={"Objects": objects, "Quiet": True}
            ),
        )
        errors = response.get("Errors", [])
        if errors:
            first = errors[0]
            failed = str(first.get("Key", ""))[len(self._prefix) :]
            raise error_from_code(
                self.name,
                f"delete {self._object(failed)} ({len(errors)} of {len(keys)} deletes failed)",
                str(first.get("Code", "")),
                str(first.get("Message", "")),
            )
        return len(keys)

    # ------------------------------------------------------------------ lifecycle

    def to_config(self) -> dict[str, Any]:
        """Return JSON constructor kwargs that rebuild this store in another process.

        Credentials appear only as ``{"$env": "VAR"}`` references (or not at all, for the default
        credential chain); the region is pinned to this store's region.

        :raises ConfigurationError: a credential was given as a literal value.
        """
        config: dict[str, Any] = {
            "bucket": self._bucket,
            "prefix": self._prefix,
            "region": self._region,
            "endpoint_url": self._endpoint_url,
            "multipart_threshold": self._threshold,
            "multipart_chunk": self._chunk,
            "max_attempts": self._max_attempts,
        }
        config.update(secrets_for_config(self.name, self._secrets))
        return config

    def close(self) -> None:
        """Close the HTTP connections of the client this store built. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            self._client.close()

    def __repr__(self) -> str:
        endpoint = f", endpoint_url={self._endpoint_url!r}" if self._endpoint_url else ""
        return f"S3ObjectStore(bucket={self._bucket!r}, prefix={self._prefix!r}{endpoint})"
