"""The chaos suite: the system on its own PostgreSQL and Redis (or a RabbitMQ vhost), real
processes, a load of orders, starts, records, finals and cancels, injected faults, and a
Jepsen-style check of the history afterwards. `python -m chaos --profile short`.
"""
