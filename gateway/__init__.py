"""gateway: the HTTP face of zerogate (REST and JSON onto RPC calls); not built yet.

For now it holds only the ``zerogate`` command-line entry point.
"""
