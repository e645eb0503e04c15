"""The long-running daemon: schedules, control socket, signals, systemd integration."""
