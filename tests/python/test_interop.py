"""The seed guide's Python client and profilesvc share one topic.

The Python side is written the way the seed guide (../shared/seed/) writes it:
confluent-kafka's Producer with compression.type=snappy, AvroSerializer
through the schema registry, string keys, tombstones as value=None, and a
Consumer with auto.offset.reset=earliest and AvroDeserializer.
"""

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import USER_V1_AVSC, await_true, unique


def seed_producer(stack) -> Producer:
    return Producer({
        "bootstrap.servers": stack.bootstrap,
        "compression.type": "snappy",
        "batch.size": 16384,
        "linger.ms": 5,
    })


def produce_sync(producer: Producer, topic: str, key: str, value):
    results = []
    producer.produce(topic, key=key, value=value, on_delivery=lambda err, msg: results.append((err, msg)))
    producer.flush(30)
    assert len(results) == 1, "no delivery report"
    err, msg = results[0]
    assert err is None, f"delivery failed: {err}"
    return msg


def test_python_avro_record_is_served_by_profilesvc(stack):
    registry = SchemaRegistryClient({"url": stack.registry})
    serializer = AvroSerializer(registry, USER_V1_AVSC)  # the seed's User: no email
    message = {"first_name": "Ada", "last_name": "Lovelace", "age": 36}
    value = serializer(message, SerializationContext(stack.topic, MessageField.VALUE))
    produce_sync(seed_producer(stack), stack.topic, "user-123", value)

    def served():
        status, body = stack.svc.request("GET", "/profiles/user-123")
        return body if status == 200 else None

    body = await_true(served, what="GET /profiles/user-123")
    assert body["first_name"] == "Ada"
    assert body["last_name"] == "Lovelace"
    assert body["age"] == 36
    assert body["email"] is None


def test_python_tombstone_deletes_the_profile(stack):
    status, _ = stack.svc.request("PUT", "/profiles/user-123",
                                  {"first_name": "Ada", "last_name": "Lovelace", "age": 36})
    assert status == 200
    # The seed guide's tombstone, verbatim.
    producer = seed_producer(stack)
    producer.produce(topic=stack.topic, key="user-123", value=None)
    producer.flush(30)
    await_true(lambda: stack.svc.request("GET", "/profiles/user-123")[0] == 404, what="GET 404 after the tombstone")


def test_profilesvc_put_is_read_by_a_python_avro_consumer(stack):
    put = {"first_name": "Grace", "last_name": "Hopper", "age": 85, "email": "grace@example.com"}
    status, body = stack.svc.request("PUT", "/profiles/user-456", put)
    assert status == 200, body

    registry = SchemaRegistryClient({"url": stack.registry})
    deserializer = AvroDeserializer(registry)  # the writer's schema, from the registry
    consumer = Consumer({
        "bootstrap.servers": stack.bootstrap,
        "group.id": unique("py-reader"),
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([stack.topic])
    try:
        def read():
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                return None
            assert msg.key() == b"user-456"
            return deserializer(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))

        got = await_true(read, timeout=60, interval=0, what="the record profilesvc wrote")
    finally:
        consumer.close()
    assert got == put
