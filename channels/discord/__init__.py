"""Discord: interactions endpoint (Ed25519-signed), outbound HTTP API; no gateway connection."""
