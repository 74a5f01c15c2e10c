"""The transport layer: thin Tornado handlers over chat, auth and store."""
