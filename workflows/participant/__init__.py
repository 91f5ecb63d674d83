"""The participant REST API, its payloads and tokens, and the pure step machine of a session."""
