"""Command lines: `taskforge` (service roles) and `taskforge-cli` (the API client)."""
