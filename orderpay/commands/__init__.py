"""The CLI's command groups. Each module imports only typer at the top (fast --help)."""
