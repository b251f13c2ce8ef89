"""One module per claim: `run(config) -> Result`, a CLI subcommand and a report section each."""
