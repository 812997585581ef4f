"""Proctor: the proxy server, its configuration, sessions, enforcement and stores."""
