"""The Redis broker keeps one synchronous client per channel (workers/redis_broker.py), and
messages still go through and are acknowledged."""

from __future__ import annotations

import redis
from kombu import Connection

from tests.conftest import REDIS_URL
from workers.celery_app import app
from workers.redis_broker import Transport


def test_a_channel_serves_its_publishes_and_acks_with_one_client_until_its_pool_changes():
    with Connection(REDIS_URL, transport=Transport) as connection:
        channel = connection.channel()
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.ping()
        channel._disconnect_pools()  # what kombu does after a fork
        with channel.conn_or_acquire() as third:
            assert third is not first
            assert third.connection_pool is channel.pool
            assert third.ping()
        channel.close()


def test_a_message_published_and_acknowledged_leaves_nothing_behind():
    with Connection(REDIS_URL, transport=Transport) as connection:
        queue = connection.SimpleQueue("test_redis_broker")
        queue.clear()
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        server = redis.Redis.from_url(REDIS_URL)
        assert server.hexists("unacked", message.delivery_tag)
        message.ack()
        assert message.payload == {"n": 1}
        assert not server.hexists("unacked", message.delivery_tag)
        assert server.llen("test_redis_broker") == 0
        queue.close()


def test_on_redis_the_celery_app_uses_it():
    assert app.conf.broker_url.startswith("redis://")
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)
