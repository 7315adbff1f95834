"""Host deploys over SSH: connection (keys, known_hosts, jump host, retries), commands (pure
builders), release (probe → act per host), fleet (parallel, summary)."""
