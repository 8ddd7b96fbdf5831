"""The PyTorch runtime: :class:`~.backend.TorchBackend` and its static-cache decoder."""
