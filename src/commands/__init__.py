"""The `onshi` subcommands, one module per group; each defines register(subparsers)."""
