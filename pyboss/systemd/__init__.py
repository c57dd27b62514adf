"""What speaks to systemd at run time: sd_notify upstream, the watchdog and start/stop
timeout keepalive, and the fd store."""
