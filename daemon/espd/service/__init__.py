"""The daemon: lifecycle, reload, the main loop, sd_notify, sockets, the state it shows."""
