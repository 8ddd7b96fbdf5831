"""The HTTP layer in front of every route: access, bodies, one error shape, metrics."""
