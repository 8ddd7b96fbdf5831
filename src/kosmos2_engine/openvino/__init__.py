"""OpenVINO runtime for CPU: Kosmos-2 exported to IR (:mod:`.export`) and served by
:class:`~.backend.OpenVINOBackend` (the engine's backend protocol; ``load_openvino_engine``).

Nothing here is imported by :mod:`kosmos2_engine` itself: importing this package needs
``openvino`` (and, for exporting, ``nncf``)."""
