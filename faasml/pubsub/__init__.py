"""Built-in PubSub backends, registered through the same hook third parties use."""

from __future__ import annotations

from faasml.hooks import PubSubBackend, hookimpl


@hookimpl
def faasml_pubsub_backends() -> list[PubSubBackend]:
    """Register the built-in PubSub backends (classes are imported lazily)."""
    return [
        PubSubBackend(
            "local",
            "faasml.pubsub.local:LocalPubSub",
            description="cross-process queues in a SQLite file; no service needed",
        ),
        PubSubBackend(
            "mns",
            "faasml.pubsub.mns:MNSPubSub",
            extra="aliyun",
            requires=("mns",),
            description="Alibaba Cloud MNS: a topic per topic, a queue subscribed to it per group",
        ),
        PubSubBackend(
            "nats",
            "faasml.pubsub.nats:NATSPubSub",
            extra="nats",
            requires=("nats",),
            description="NATS JetStream: a stream per topic, a durable pull consumer per group",
        ),
        PubSubBackend(
            "redis",
            "faasml.pubsub.redis:RedisPubSub",
            extra="redis",
            requires=("redis",),
            description="Redis Streams: a stream per topic, a consumer group per group",
        ),
        PubSubBackend(
            "smn",
            "faasml.pubsub.smn:SMNPubSub",
            extra="huawei",
            requires=("huaweicloudsdksmn",),
            description="Huawei Cloud SMN (push only) paired with a pull-capable queue backend",
        ),
        PubSubBackend(
            "sqs",
            "faasml.pubsub.sqs:SQSPubSub",
            extra="aws",
            requires=("boto3",),
            description="AWS SNS FIFO topics fanning out to one SQS FIFO queue per group",
        ),
    ]
