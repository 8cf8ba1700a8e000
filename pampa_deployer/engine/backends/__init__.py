"""How pampa reaches a host: the backend interface, SSH (with its shell session, host keys and liveness),
local and dry-run backends, and the connection pool."""
