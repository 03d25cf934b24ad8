"""Implementations of the application's ports: memory/, postgres/, redis/, telemetry/."""
