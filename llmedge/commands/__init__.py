"""The subcommands of `llmedge`, one module per group."""
