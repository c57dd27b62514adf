"""Drop-ins for existing tools: `pyboss start-server` (Server::Starter's start_server) and
`pyboss.Boss` (littleboss-style programs that supervise themselves)."""
