"""The running worker: the gRPC pump over the flow, health, metrics and logs."""
