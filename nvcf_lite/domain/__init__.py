"""The platform's rules and state transitions, independent of HTTP and drivers."""
