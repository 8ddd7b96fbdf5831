"""Serve Kosmos-2 as a Supervisely app.

uvicorn main:model.app --app-dir src            # the serving GUI (model table, Serve button)
python src/main.py deploy --device cpu          # SDK CLI: headless server on 127.0.0.1:8000
python src/main.py predict IMAGES --device cpu  # SDK CLI: annotations written to ./predictions
"""

from kosmos2_app.config import limit_opencv_decoding

limit_opencv_decoding()  # before supervisely imports cv2, which reads the limit once

from kosmos2_app.local_env import load_local_env  # noqa: E402
from kosmos2_app.model import Kosmos2  # noqa: E402

load_local_env()
model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
model.serve()
