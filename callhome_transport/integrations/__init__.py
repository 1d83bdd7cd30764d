"""What callers use on top of the server: the ncclient hand-off, the requests adapter
for RESTCONF, and the one-device ``call_home`` functions."""
