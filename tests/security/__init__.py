"""Security tests (issue 7): no key leaks, TLS verification, and the server's hardening."""
