"""Where the network runs: the :class:`~.protocol.Backend` protocol the engine calls, the PyTorch
runtime (:mod:`.torch`) and the OpenVINO runtime (:mod:`.openvino`, imported lazily)."""
