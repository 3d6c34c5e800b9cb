"""Built-in ObjectStore backends, registered through the same hook third parties use."""

from __future__ import annotations

from faasml.hooks import ObjectStoreBackend, hookimpl


@hookimpl
def faasml_object_store_backends() -> list[ObjectStoreBackend]:
    """Register the built-in object stores (classes are imported lazily)."""
    return [
        ObjectStoreBackend(
            "file",
            "faasml.storage.file:FileObjectStore",
            description="objects as files under a directory (atomic writes)",
        ),
        ObjectStoreBackend(
            "libcloud",
            "faasml.storage.libcloud:LibcloudObjectStore",
            extra="libcloud",
            requires=("libcloud", "fasteners"),
            description="any Apache Libcloud storage driver (S3, MinIO, GCS, Azure, LOCAL ...)",
        ),
        ObjectStoreBackend(
            "memory",
            "faasml.storage.memory:MemoryObjectStore",
            description="in-memory, shared with local workers over a Unix socket",
        ),
        ObjectStoreBackend(
            "obs",
            "faasml.storage.obs:OBSObjectStore",
            extra="huawei",
            requires=("obs",),
            description="Huawei Cloud OBS via esdk-obs-python",
        ),
        ObjectStoreBackend(
            "oss",
            "faasml.storage.oss:OSSObjectStore",
            extra="aliyun",
            requires=("oss2",),
            description="Alibaba Cloud OSS via oss2; atomic if_absent (x-oss-forbid-overwrite)",
        ),
        ObjectStoreBackend(
            "redis",
            "faasml.storage.redis:RedisObjectStore",
            extra="redis",
            requires=("redis",),
            description="objects in a Redis server; big ones chunked, atomic replace",
        ),
        ObjectStoreBackend(
            "s3",
            "faasml.storage.s3:S3ObjectStore",
            extra="aws",
            requires=("boto3",),
            description="AWS S3 or any S3-compatible server; multipart, conditional writes",
        ),
    ]
