"""JetStream on the hub (nats-server `jetstream*.go`, `stream.go`, `consumer.go`, `*store.go`), one file per concern.

Imports point one way: the hub core (host/server.py) imports `jetstream.JetStream` when JetStream is enabled and
nothing else from here; `jetstream` wires the API, streams and consumers into the accounts; streams, consumers
and the API import the storage layer and the small shared modules, never `jetstream` or `api` back.
"""
