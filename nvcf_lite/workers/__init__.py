"""Background loops in the server's event loop: Scheduler (and later Dispatcher, Sweeper)."""
