"""The driving side: configuration, the dishka container, HTTP, CLI, and process roles."""
