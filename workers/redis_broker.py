"""kombu's Redis transport, with one synchronous Redis client per channel.

kombu builds a new redis-py client for each operation it does outside the event loop: every
publish (the relay, the API's score chain), and twice for every task a worker receives (the
unacked record on receipt, its removal at the ack). redis-py's constructor copies its table of
about 200 response callbacks: 118 us here, 17% of a worker's main process in py-spy. A client
holds no connection of its own (it takes one from the pool per command), so one per channel
serves them all; a new one comes with a new pool (kombu replaces the pool after a fork or a
lost connection).
"""

from __future__ import annotations

from kombu.transport import redis


class Channel(redis.Channel):
    _sync_client = None

    def _create_client(self, asynchronous=False):
        if asynchronous:  # the event loop's own, made once per channel already
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client()
        return client


class Transport(redis.Transport):
    Channel = Channel
