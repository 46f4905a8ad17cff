"""Upstream credentials: the resolver the proxy reads on every request, and the file tools the CLI uses."""
