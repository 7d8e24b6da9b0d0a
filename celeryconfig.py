"""Every Celery setting of onlinestudy, with the reason beside the non-obvious ones.

Broker and result backend come from the environment (app.config); the embedded default is the
filesystem transport under var/broker and a SQLite result backend, so no server is needed.
"""

from kombu import Queue as KombuQueue
from kombu.transport import TRANSPORT_ALIASES

from app.config import Settings
from app.shared.queues import Queue

_settings = Settings.from_env()

broker_url = _settings.broker_url
result_backend = _settings.result_backend
broker_connection_retry_on_startup = True

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

# One queue per context; a task goes to the queue named by the prefix of its name.
task_queues = [KombuQueue(queue.value, routing_key=queue.value) for queue in Queue]
task_default_queue = Queue.ORDERS.value
task_routes = {f"{queue.value}.*": {"queue": queue.value} for queue in Queue}

# Consumers are idempotent, so a message is acknowledged only after the work, and a worker
# killed mid-task gives its message back instead of losing it.
task_acks_late = True
task_reject_on_worker_lost = True
# Take one message at a time: a batch task already carries many events.
worker_prefetch_multiplier = 1
# Results are only read by the synchronous final score, which asks for them explicitly,
# within its guard of seconds; they are not deleted after, but expire on their own.
task_ignore_result = True
result_expires = 600
# Bound every task; the longest (an SMS send with its quick retries) is a few seconds.
task_soft_time_limit = 60
task_time_limit = 90
worker_max_tasks_per_child = 10_000
worker_hijack_root_logger = False
# Each worker also consumes its own direct queue: the liveness canary goes there.
worker_direct = True
# Task events only while a monitor asks for them. Without a monitor the workers' main
# processes would spend CPU on three events per task for no reader.
worker_send_task_events = False

if _settings.embedded:
    # kombu's filesystem transport, with each message renamed into the queue once written
    # (workers/brokers.py): a worker could take a file still empty, and stop.
    broker_transport = "workers.brokers:FileTransport"
    _broker_dir = _settings.var_dir / "broker"
    broker_transport_options = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "control_folder": str(_settings.var_dir / "broker-control"),
        # The filesystem transport polls; 50 ms keeps events flowing in tens of milliseconds.
        "polling_interval": 0.05,
    }
    # Remote control works here (Flower lists workers and queues), but task events do not:
    # the file transport keeps fanning them out to a monitor's queue after it has gone, and
    # the folder would grow for ever. `onlinestudy flower` does not turn them on here.
else:
    if broker_url.startswith(("redis://", "rediss://")):
        # kombu's Redis transport with one client per channel instead of one per publish and
        # two per task received (workers/brokers.py), put in place under the redis schemes
        # themselves: the broker URL keeps its scheme, which Flower reads to find the queue
        # lengths (named as broker_transport, the class path became the scheme, and Flower's
        # broker page answered "'redis' broker is not supported").
        for _scheme in ("redis", "rediss"):
            TRANSPORT_ALIASES[_scheme] = "workers.brokers:RedisTransport"
    broker_transport_options = {
        # Above the longest task, so Redis does not hand a running task to a second worker.
        # Lost messages do not wait for this: the outbox redelivers after REDELIVERY_TIMEOUT_S.
        "visibility_timeout": 3600,
    }
    # On Redis and RabbitMQ, `onlinestudy flower` turns task events on when it starts (it
    # broadcasts enable_events, and again every minute).
    # No "task-sent" events either: the relay would publish one per task, a real share of its
    # work, and Flower already sees each task when a worker receives it.
