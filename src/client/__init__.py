"""The client side of onshi's gRPC services: channels, callers, and reading refusals."""
