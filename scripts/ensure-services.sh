#!/usr/bin/env bash
# Start PostgreSQL and Redis (and RabbitMQ with its management API with --rabbitmq) when they
# are down, as a fresh machine may have them stopped. The tests create their own databases.
set -euo pipefail

wait_for() {  # name, command...
  local name=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "ensure-services: $name did not come up" >&2; return 1
}

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "ensure-services: starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432 -q
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  echo "ensure-services: starting Redis" >&2
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
fi

if [[ "${1:-}" == "--rabbitmq" ]]; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    echo "ensure-services: starting RabbitMQ" >&2
    rabbitmq-server -detached
    wait_for RabbitMQ bash -c '(exec 3<>/dev/tcp/127.0.0.1/5672)'
  fi
  # Flower's broker page reads RabbitMQ's queue lengths from the management API (:15672).
  # Enabled on the running node, without a restart.
  if ! (exec 3<>/dev/tcp/127.0.0.1/15672) 2>/dev/null; then
    echo "ensure-services: enabling RabbitMQ's management API" >&2
    wait_for "RabbitMQ node" rabbitmqctl -q await_startup
    rabbitmq-plugins -q enable rabbitmq_management >/dev/null
    wait_for "RabbitMQ management API" bash -c '(exec 3<>/dev/tcp/127.0.0.1/15672)'
  fi
fi
