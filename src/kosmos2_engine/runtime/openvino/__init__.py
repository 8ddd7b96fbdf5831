"""OpenVINO runtime for CPU: Kosmos-2 exported to IR (:mod:`.export`) and served by
:class:`~.backend.OpenVINOBackend` (the engine's backend protocol; ``load_openvino_engine``).

Imported only when called for (:func:`kosmos2_engine.load_openvino_engine`, the export CLI): it needs
``openvino`` (and, for exporting, ``nncf``)."""
