"""Use cases and the ports they talk through.

Imports only taskforge.domain and the standard library.
"""
