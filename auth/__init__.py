"""auth: API tokens, scopes and rate limits in front of the RPC network (not built yet)."""
