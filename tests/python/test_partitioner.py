"""Partitioners across languages.

librdkafka (under confluent-kafka) places keyed records with CRC32 by default
(partitioner=consistent_random); Java clients, franz-go and so compactkv's
default use murmur2 (librdkafka: murmur2_random). On a topic with more than one
partition the same key then lands in different partitions. profilesvc's store
detects such keys and counts them in profilesvc_misrouted_records_total.
"""

import zlib

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import USER_V1_AVSC, await_true, unique

PARTITIONS = 6
MISROUTED = "profilesvc_misrouted_records_total"


def produce_users(stack, topic, keys, partitioner=None, tag="py") -> dict[str, int]:
    """Produces a seed User per key, the seed guide's way, and returns the
    partition each key was delivered to."""
    conf = {"bootstrap.servers": stack.bootstrap, "compression.type": "snappy", "linger.ms": 5}
    if partitioner:
        conf["partitioner"] = partitioner
    producer = Producer(conf)
    serializer = AvroSerializer(SchemaRegistryClient({"url": stack.registry}), USER_V1_AVSC)
    placed, errors = {}, []

    def report(err, msg):
        if err:
            errors.append(err)
        else:
            placed[msg.key().decode()] = msg.partition()

    for i, key in enumerate(keys):
        value = serializer({"first_name": key, "last_name": tag, "age": i},
                           SerializationContext(topic, MessageField.VALUE))
        producer.produce(topic, key=key, value=value, on_delivery=report)
    assert producer.flush(30) == 0
    assert not errors, errors
    assert set(placed) == set(keys)
    return placed


def partitions_in_topic(stack, topic, prefix) -> dict[str, int]:
    """Reads the whole topic and returns the partition of each key with prefix."""
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": unique("py-scan"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    out = {}
    try:
        def done():
            for msg in consumer.consume(num_messages=500, timeout=1.0):
                if not msg.error() and msg.key().decode().startswith(prefix):
                    out[msg.key().decode()] = msg.partition()
            return len(out) >= 60
        await_true(done, timeout=60, interval=0, what=f"keys {prefix}* in {topic}")
    finally:
        consumer.close()
    return out


def test_librdkafka_partitioners_are_crc32_and_murmur2(stack):
    """consistent_random is crc32 (IEEE, zlib's) of the key modulo the partition
    count; murmur2_random picks the partition the Go store (murmur2) picks."""
    topic = unique("py-parts")
    stack.create_topic(topic, PARTITIONS)
    keys = [f"user-{i}" for i in range(60)]

    crc = produce_users(stack, topic, keys)  # librdkafka's default
    assert crc == {k: zlib.crc32(k.encode()) % PARTITIONS for k in keys}

    # The Go side: profilesvc (murmur2) writes go-N; where did each land?
    stack.svc.restart(topic)
    go_keys = [f"go-{i}" for i in range(60)]
    for k in go_keys:
        status, body = stack.svc.request("PUT", f"/profiles/{k}", {"first_name": k, "last_name": "go", "age": 1})
        assert status == 200, body
    go_placed = partitions_in_topic(stack, topic, "go-")

    other = unique("py-parts-m2")
    stack.create_topic(other, PARTITIONS)
    m2 = produce_users(stack, other, go_keys, partitioner="murmur2_random")
    assert m2 == go_placed
    assert any(zlib.crc32(k.encode()) % PARTITIONS != m2[k] for k in go_keys), "the two partitioners differ"


def test_python_default_partitioner_is_detected_as_misrouted(stack):
    topic = unique("py-crc32")
    stack.create_topic(topic, PARTITIONS)
    keys = [f"user-{i}" for i in range(60)]
    produce_users(stack, topic, keys)  # default: consistent_random (crc32)
    stack.svc.restart(topic)  # the restore finds them
    restored = stack.svc.metric(MISROUTED)
    assert restored is not None, f"no {MISROUTED} in /metrics"
    # With 6 partitions about 5 keys in 6 land elsewhere than murmur2 puts them.
    assert 30 <= restored <= 60, restored
    status, body = stack.svc.request("GET", "/profiles/user-7")
    assert status == 200 and body["first_name"] == "user-7", "a misrouted key is still served"

    # The follower finds them too.
    produce_users(stack, topic, keys)
    await_true(lambda: stack.svc.metric(MISROUTED) == 2 * restored, what="misrouted count to double while following")


def test_murmur2_random_partitioner_is_not_misrouted(stack):
    topic = unique("py-murmur2")
    stack.create_topic(topic, PARTITIONS)
    keys = [f"user-{i}" for i in range(60)]
    produce_users(stack, topic, keys, partitioner="murmur2_random")
    stack.svc.restart(topic)
    status, body = stack.svc.request("GET", "/profiles?prefix=user-&limit=100")
    assert status == 200 and len(body["items"]) == 60, body
    assert stack.svc.metric(MISROUTED) == 0

    # While following, too: wait until the second round is applied.
    produce_users(stack, topic, keys, partitioner="murmur2_random", tag="round-2")
    await_true(lambda: all(stack.svc.request("GET", f"/profiles/{k}")[1]["last_name"] == "round-2" for k in keys),
               what="the second round in profilesvc")
    assert stack.svc.metric(MISROUTED) == 0
