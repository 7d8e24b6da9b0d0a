"""Transactional outbox: the event log, one delivery row per (event, consumer), per-order sequence.

Rows are written in the business transaction, so nothing is published for a change that rolls
back. The relay publishes due deliveries and pushes their next attempt out by the redelivery
timeout; a consumer marks its delivery DONE after its own commit, so an event nobody recorded is
published again. One module per job:

- `tables`: the event log, the deliveries and the per-order sequences;
- `writer`: writes events with their deliveries and sequences into the caller's transaction;
- `notices`: the NOTIFY channel and payloads that wake the relay;
- `claim`: the relay's claim of due deliveries, which schedules their redelivery;
- `acks`: the consumer's side: done, a failed attempt (parked as DEAD after the last), task ended;
- `dead_letters`: the operator's list and replay of parked deliveries;
- `backlog`: how many deliveries are still pending, for metrics and health.
"""
