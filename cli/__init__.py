"""`taskforge-cli`, the operator's command line: a client of the REST API, built on
`taskforge.client`."""
