"""kombu transports with two fixes of ours: Redis without a client per operation, and the
embedded filesystem broker without a half-written message for a reader to choke on."""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class RedisChannel(redis.Channel):
    """One synchronous Redis client per channel.

    kombu builds a new redis-py client for each operation it does outside the event loop: every
    publish (the relay, the API's score chain), and twice for every task a worker receives (the
    unacked record on receipt, its removal at the ack). redis-py's constructor copies its whole
    table of response callbacks, a large share of a busy worker's main process. A client holds
    no connection of its own (it takes one from the pool per command), so one per channel serves
    them all; a new one comes with a new pool (kombu replaces the pool after a fork or a lost
    connection)."""

    _sync_client = None

    def _create_client(self, asynchronous=False):
        if asynchronous:  # the event loop's own, made once per channel already
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client()
        return client


class RedisTransport(redis.Transport):
    Channel = RedisChannel


class FileChannel(filesystem.Channel):
    """Messages appear in the queue folder whole.

    kombu creates a message's file under its final name and then writes it; a worker listing the
    folder in between took the empty file, failed to decode it and stopped ("Unrecoverable
    error: JSONDecodeError"), and `onlinestudy run` stopped with it. The file is now written
    under a name no reader takes (readers match the part after the first dot) and renamed into
    place, which is atomic."""

    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + ".part"
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class FileTransport(filesystem.Transport):
    Channel = FileChannel
