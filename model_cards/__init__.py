"""Model cards: data only, one TOML file per model, validated by `llmedge.cards`."""
