"""The engine process: one Session (the pure scheduler of requests) behind a ZeroMQ shell."""
