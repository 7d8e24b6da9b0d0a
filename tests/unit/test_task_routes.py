"""Every consumer's task goes to its context's queue by the routing table alone (Celery 6 drops
a task's own `queue`), so a retry or a hand-sent task lands where its workers listen."""

from celery import Celery

from app.policies import POLICIES


def test_each_consumer_task_is_routed_to_its_policys_queue():
    celery = Celery("routes-test")
    celery.config_from_object("celeryconfig")
    for policy in POLICIES:
        route = celery.amqp.router.route({}, policy.consumer)
        assert route["queue"].name == policy.queue.value, policy.consumer
