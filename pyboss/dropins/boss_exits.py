"""Exit statuses, the same for every program that uses Boss (both its sides import them)."""
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_ALREADY_RUNNING = 0, 1, 2, 3, 3
