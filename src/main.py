"""Serve Kosmos-2 as a Supervisely app.

    uvicorn main:model.app --app-dir src            # the serving GUI (model table, Serve button)
    python src/main.py deploy --device cpu          # SDK CLI: headless server on port 8000
    python src/main.py predict IMAGES --device cpu  # SDK CLI: annotations written to ./predictions
"""

from decode_limits import limit_opencv_decoding

limit_opencv_decoding()  # before supervisely imports cv2, which reads the limit once

from kosmos2_app import Kosmos2, load_local_env  # noqa: E402

load_local_env()
model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
model.serve()
