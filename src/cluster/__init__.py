"""The replicated log that read nodes are fed from (docs/CLUSTER.md)."""
