"""TaskForge's domain: jobs, their lifecycle, retry policy and validation. Standard library only."""
