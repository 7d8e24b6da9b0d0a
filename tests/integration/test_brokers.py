"""Our kombu transports (workers/brokers.py): Redis keeps one synchronous client per channel,
the filesystem broker never shows a reader a message still being written; messages go through
and are acknowledged on both."""

from __future__ import annotations

import os

import pytest
import redis
from kombu import Connection

from tests.conftest import REDIS_URL
from workers.brokers import FileTransport, RedisTransport
from workers.celery_app import app


@pytest.mark.speed
def test_a_redis_channel_serves_its_publishes_and_acks_with_one_client_until_its_pool_changes():
    with Connection(REDIS_URL, transport=RedisTransport) as connection:
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


def test_a_message_published_and_acknowledged_on_redis_leaves_nothing_behind():
    with Connection(REDIS_URL, transport=RedisTransport) as connection:
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


def test_on_redis_the_celery_app_uses_our_transport_under_the_redis_scheme():
    assert app.conf.broker_url.startswith("redis://")
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, RedisTransport)
        # What Flower reads to find the queue lengths (tests/e2e/test_flower.py).
        assert connection.as_uri().startswith("redis://")


def _file_broker(tmp_path):
    """A filesystem broker whose messages go to tmp_path/queue; its control folder too is in
    tmp_path (kombu's default is ./control, in whatever folder the tests run). Each test takes
    a queue name of its own: kombu remembers what it declared for the rest of the process, and
    would not write a second control folder's binding for the same name."""
    (tmp_path / "queue").mkdir()
    options = {
        "data_folder_in": str(tmp_path / "queue"),
        "data_folder_out": str(tmp_path / "queue"),
        "control_folder": str(tmp_path / "control"),
    }
    return Connection("filesystem://", transport=FileTransport, transport_options=options)


def test_a_file_message_still_being_written_is_not_taken(tmp_path):
    # What a reader found while kombu wrote in place: the queue's file, still empty.
    with _file_broker(tmp_path) as connection:
        queued = tmp_path / "queue"
        (queued / "1_ab.test_file_broker_partial.msg.part").write_bytes(b"")
        queue = connection.SimpleQueue("test_file_broker_partial")
        with pytest.raises(queue.Empty):
            queue.get(block=False)
        queue.put({"n": 1})
        message = queue.get(block=False)
        message.ack()
        assert message.payload == {"n": 1}
        assert os.listdir(queued) == ["1_ab.test_file_broker_partial.msg.part"]
        queue.close()


def test_a_file_message_is_renamed_into_the_queue_only_once_whole(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append((sorted(os.listdir(tmp_path / "queue")), os.path.getsize(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with _file_broker(tmp_path) as connection:
        queue = connection.SimpleQueue("test_file_broker")
        queue.put({"n": 1})
        queue.close()
    [(names, size)] = seen
    assert len(names) == 1 and names[0].endswith(".test_file_broker.msg.part") and size > 0
    assert [n.endswith(".test_file_broker.msg") for n in os.listdir(tmp_path / "queue")] == [True]
