"""The bare baseline servers: what statebus would cost with nothing of its own in the way."""
