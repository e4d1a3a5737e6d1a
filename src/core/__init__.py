"""Store, identifiers and lookup engines: everything below the network."""
