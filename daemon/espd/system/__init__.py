"""The host: TUN devices, routes (netlink), privileges."""
