"""A loopback stub of the Alibaba Cloud OSS REST API, so OSSObjectStore is tested end to end.

moto speaks S3, which differs from OSS exactly where OSSObjectStore relies on OSS: moto ignores
``x-oss-forbid-overwrite`` and ``x-oss-range-behavior``, and its ListObjectsV2 XML (namespaced)
is not what oss2 parses. This stub implements what the backend uses, as the OSS API reference
(help.aliyun.com, "PutObject", "GetObject", "HeadObject", "DeleteObject", "ListObjectsV2
(GetBucketV2)", "PutBucket", "HTTP status code 416/409/503") describes it:

* requests are path-style (``/<bucket>/<key>``), which oss2 uses for IP endpoints;
* PutObject stores atomically and, with ``x-oss-forbid-overwrite: true``, refuses an existing key
  with 409 ``FileAlreadyExists``; it answers with ``ETag`` (upper-case MD5) and
  ``x-oss-hash-crc64ecma``, and checks ``Content-MD5`` when sent;
* GetObject honours one ``Range``: a satisfiable range gives 206 and ``Content-Range``; by default
  an invalid or out-of-range one is ignored (200, whole object), while with
  ``x-oss-range-behavior: standard`` a start past the end gives 416 ``InvalidRange`` and an end
  past it is clamped;
* HeadObject/GetObject report ``Content-Length``, ``ETag``, ``Last-Modified``,
  ``x-oss-object-type``, ``x-oss-hash-crc64ecma``; HEAD errors have no body;
* DeleteObject answers 204 whether or not the key existed;
* ListObjectsV2 returns OSS's un-namespaced ``ListBucketResult`` with ``EncodingType`` url,
  URL-encoded keys, ``KeyCount``, and paging through ``NextContinuationToken`` (``max-keys``
  default 100, at most 1000);
* PutBucket answers 409 ``BucketAlreadyExists`` for an existing bucket;
* errors are ``<Error><Code/><Message/><RequestId/><HostId/>...</Error>`` with
  ``x-oss-request-id``; a missing bucket is 404 ``NoSuchBucket``;
* V1 signatures (``Authorization: OSS <id>:<signature>``) are verified in full (403
  ``InvalidAccessKeyId`` / ``SignatureDoesNotMatch``); for V4 (``OSS4-HMAC-SHA256``) only the key
  id and the credential scope are checked; an STS key requires its ``x-oss-security-token``.

``fail_next()`` queues an injected error response for the next request(s).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

import crcmod

__all__ = ["OSSStub"]

# Signed sub-resources of V1 signatures that this stub can receive.
_SUBRESOURCES = frozenset({"continuation-token", "security-token", "acl", "bucketInfo"})
_CRC64 = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class _Object:
    data: bytes
    etag: str
    crc: int
    mtime: float


@dataclass
class _Fault:
    status: int
    code: str
    method: str | None
    headers: dict[str, str] = field(default_factory=dict)


class OSSStub:
    """An in-memory OSS server on ``127.0.0.1``; use as a context manager.

    :param credentials: access key id -> secret accepted by the server.
    :param sts_tokens: access key id -> security token that requests with that id must carry.
    """

    def __init__(
        self,
        credentials: dict[str, str] | None = None,
        sts_tokens: dict[str, str] | None = None,
    ) -> None:
        self.credentials = dict(credentials or {"test-id": "test-secret"})
        self.sts_tokens = dict(sts_tokens or {})
        self.buckets: dict[str, dict[str, _Object]] = {}
        self.lock = threading.Lock()
        self.faults: list[_Fault] = []
        #: (method, path, headers with lower-case names) of every request received.
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        stub = self

        class Handler(_Handler):
            server_stub = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OSSStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def fail_next(
        self,
        status: int,
        code: str,
        *,
        method: str | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests (of ``method``, if given) with this error."""
        with self.lock:
            for _ in range(times):
                self.faults.append(_Fault(status, code, method, dict(headers or {})))

    def objects(self, bucket: str) -> dict[str, bytes]:
        """A snapshot of a bucket's objects."""
        with self.lock:
            return {k: o.data for k, o in self.buckets.get(bucket, {}).items()}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_stub: OSSStub

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass  # keep pytest output clean

    # ------------------------------------------------------------------ plumbing

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("x-oss-request-id", uuid.uuid4().hex[:24].upper())
        self.send_header("Server", "AliyunOSS")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _error(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **extra: str,
    ) -> None:
        fields = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in extra.items())
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
            f"<Code>{code}</Code><Message>{escape(message)}</Message>"
            f"<RequestId>{uuid.uuid4().hex[:24].upper()}</RequestId>"
            f"<HostId>{self.headers.get('Host', '')}</HostId>{fields}</Error>"
        ).encode()
        self._send(status, body, {"Content-Type": "application/xml", **(headers or {})})

    def _target(self) -> tuple[str, str, dict[str, str]]:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        bucket, _, key = path.lstrip("/").partition("/")
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        return bucket, key, query

    # ------------------------------------------------------------------ authentication

    def _authenticate(self, bucket: str, key: str, query: dict[str, str]) -> bool:
        stub = self.server_stub
        auth = self.headers.get("Authorization", "")
        if auth.startswith("OSS4-HMAC-SHA256 "):
            fields = dict(
                item.strip().split("=", 1) for item in auth[17:].split(",") if "=" in item
            )
            access_id, _, scope = fields.get("Credential", "").partition("/")
            scope_parts = scope.split("/")
            if len(scope_parts) != 4 or scope_parts[2:] != ["oss", "aliyun_v4_request"]:
                self._error(400, "InvalidArgument", "Invalid V4 credential scope")
                return False
        elif auth.startswith("OSS "):
            access_id, _, signature = auth[4:].partition(":")
            secret = stub.credentials.get(access_id)
            if secret is not None and signature != self._v1_signature(secret, bucket, key, query):
                self._error(
                    403,
                    "SignatureDoesNotMatch",
                    "The request signature we calculated "
                    "does not match the signature you provided.",
                )
                return False
        else:
            self._error(403, "AccessDenied", "You have no right to access this object.")
            return False
        if access_id not in stub.credentials:
            self._error(
                403,
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
                OSSAccessKeyId=access_id,
            )
            return False
        token = stub.sts_tokens.get(access_id)
        if token is not None and self.headers.get("x-oss-security-token") != token:
            self._error(403, "InvalidSecurityToken", "The security token you provided is invalid.")
            return False
        return True

    def _v1_signature(self, secret: str, bucket: str, key: str, query: dict[str, str]) -> str:
        oss_headers = sorted(
            (name.lower(), value)
            for name, value in self.headers.items()
            if name.lower().startswith("x-oss-")
        )
        canonical_headers = "".join(f"{name}:{value}\n" for name, value in oss_headers)
        resource = f"/{bucket}/{key}" if bucket else "/"
        sub = sorted((k, v) for k, v in query.items() if k in _SUBRESOURCES)
        if sub:
            resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in sub)
        to_sign = "\n".join(
            [
                self.command,
                self.headers.get("Content-MD5", ""),
                self.headers.get("Content-Type", ""),
                self.headers.get("x-oss-date", "") or self.headers.get("Date", ""),
                canonical_headers + resource,
            ]
        )
        digest = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha1).digest()
        return base64.b64encode(digest).decode()

    # ------------------------------------------------------------------ dispatch

    def _handle(self) -> None:
        stub = self.server_stub
        bucket, key, query = self._target()
        body = self._read_body() if self.command in ("PUT", "POST") else b""
        with stub.lock:
            stub.requests.append(
                (self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
            )
            fault = next((f for f in stub.faults if f.method in (None, self.command)), None)
            if fault is not None:
                stub.faults.remove(fault)
        if fault is not None:
            self._error(fault.status, fault.code, f"injected {fault.code}", fault.headers)
            return
        if not self._authenticate(bucket, key, query):
            return
        if not bucket:
            self._error(400, "InvalidBucketName", "The specified bucket is not valid.")
            return
        if not key:
            if self.command == "PUT":
                self._create_bucket(bucket)
            elif self.command == "GET":
                self._list(bucket, query)
            else:
                self._error(405, "MethodNotAllowed", "The specified method is not allowed.")
            return
        with stub.lock:
            objects = stub.buckets.get(bucket)
        if objects is None:
            self._error(
                404, "NoSuchBucket", "The specified bucket does not exist.", BucketName=bucket
            )
            return
        if self.command == "PUT":
            self._put(objects, key, body)
        elif self.command in ("GET", "HEAD"):
            self._get(objects, key)
        elif self.command == "DELETE":
            with stub.lock:
                objects.pop(key, None)
            self._send(204)
        else:
            self._error(405, "MethodNotAllowed", "The specified method is not allowed.")

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _handle

    # ------------------------------------------------------------------ operations

    def _create_bucket(self, bucket: str) -> None:
        stub = self.server_stub
        with stub.lock:
            if bucket in stub.buckets:
                exists = True
            else:
                exists = False
                stub.buckets[bucket] = {}
        if exists:
            self._error(
                409,
                "BucketAlreadyExists",
                "The requested bucket name is not available.",
                BucketName=bucket,
            )
            return
        self._send(200)

    def _put(self, objects: dict[str, _Object], key: str, body: bytes) -> None:
        stub = self.server_stub
        md5 = hashlib.md5(body).digest()
        sent_md5 = self.headers.get("Content-MD5")
        if sent_md5 is not None and sent_md5 != base64.b64encode(md5).decode():
            self._error(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
            return
        obj = _Object(body, '"' + md5.hex().upper() + '"', _CRC64(body), time.time())
        forbid = self.headers.get("x-oss-forbid-overwrite", "false").lower()
        if forbid not in ("true", "false"):
            self._error(400, "InvalidArgument", "x-oss-forbid-overwrite must be true or false")
            return
        with stub.lock:
            if forbid == "true" and key in objects:
                conflict = True
            else:
                conflict = False
                objects[key] = obj
        if conflict:
            self._error(
                409,
                "FileAlreadyExists",
                "The object you specified already exists and can not be overwritten.",
            )
            return
        self._send(200, headers={"ETag": obj.etag, "x-oss-hash-crc64ecma": str(obj.crc)})

    def _get(self, objects: dict[str, _Object], key: str) -> None:
        with self.server_stub.lock:
            obj = objects.get(key)
        if obj is None:
            if self.command == "HEAD":
                self._send(404)
            else:
                self._error(404, "NoSuchKey", "The specified key does not exist.", Key=key)
            return
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": obj.etag,
            "Last-Modified": formatdate(obj.mtime, usegmt=True),
            "x-oss-object-type": "Normal",
            "x-oss-hash-crc64ecma": str(obj.crc),
            "Accept-Ranges": "bytes",
        }
        size = len(obj.data)
        wanted = self._range(size)
        if wanted is None:
            self._send(200, obj.data, headers)
            return
        if isinstance(wanted, str):
            self._error(
                416,
                "InvalidRange",
                "The requested range cannot be satisfied",
                ActualObjectSize=str(size),
            )
            return
        first, last = wanted
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        self._send(206, obj.data[first : last + 1], headers)

    def _range(self, size: int) -> tuple[int, int] | str | None:
        """``(first, last)``, ``"unsatisfiable"``, or ``None`` for the whole object."""
        header = self.headers.get("Range")
        if not header:
            return None
        standard = self.headers.get("x-oss-range-behavior", "").lower() == "standard"
        spec = header[6:] if header.startswith("bytes=") else ""
        if not spec or "," in spec or "-" not in spec:
            return None  # malformed: OSS ignores it
        start_text, _, end_text = spec.partition("-")
        try:
            if not start_text:
                suffix = int(end_text)
                return (max(0, size - suffix), size - 1) if size and suffix else None
            first = int(start_text)
            last = int(end_text) if end_text else size - 1
        except ValueError:
            return None
        if first >= size:
            return "unsatisfiable" if standard else None
        if last >= size:
            if not standard and end_text:
                return None  # OSS's default: an out-of-range end returns the whole object
            last = size - 1
        if last < first:
            return None
        return first, last

    def _list(self, bucket: str, query: dict[str, str]) -> None:
        stub = self.server_stub
        if query.get("list-type") != "2":
            self._error(400, "InvalidArgument", "this stub only implements ListObjectsV2")
            return
        with stub.lock:
            objects = stub.buckets.get(bucket)
            snapshot = sorted(objects.items()) if objects is not None else None
        if snapshot is None:
            self._error(
                404, "NoSuchBucket", "The specified bucket does not exist.", BucketName=bucket
            )
            return
        prefix = query.get("prefix", "")
        token = query.get("continuation-token", "")
        start_after = query.get("start-after", "")
        max_keys = min(int(query.get("max-keys") or 100), 1000)
        url = query.get("encoding-type") == "url"

        def enc(text: str) -> str:
            return quote(text, safe="/") if url else escape(text)

        selected: Iterator[tuple[str, _Object]] = (
            (k, o) for k, o in snapshot if k.startswith(prefix) and k > token and k > start_after
        )
        page: list[tuple[str, _Object]] = []
        truncated = False
        for item in selected:
            if len(page) == max_keys:
                truncated = True
                break
            page.append(item)
        contents = "".join(
            f"<Contents><Key>{enc(k)}</Key>"
            f"<LastModified>{time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime(o.mtime))}"
            f"</LastModified><ETag>{escape(o.etag)}</ETag><Type>Normal</Type>"
            f"<Size>{len(o.data)}</Size><StorageClass>Standard</StorageClass></Contents>"
            for k, o in page
        )
        next_token = (
            f"<NextContinuationToken>{enc(page[-1][0])}</NextContinuationToken>" if page else ""
        )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult>'
            f"<Name>{escape(bucket)}</Name><Prefix>{enc(prefix)}</Prefix>"
            + (f"<ContinuationToken>{enc(token)}</ContinuationToken>" if token else "")
            + f"<MaxKeys>{max_keys}</MaxKeys><Delimiter></Delimiter>"
            + ("<EncodingType>url</EncodingType>" if url else "")
            + f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
            + (next_token if truncated else "")
            + f"<KeyCount>{len(page)}</KeyCount>{contents}</ListBucketResult>"
        ).encode()
        self._send(200, body, {"Content-Type": "application/xml"})
