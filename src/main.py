"""Serve Kosmos-2 as a Supervisely app.

uvicorn main:model.app --app-dir src            # the serving GUI (model table, Serve button)
python src/main.py deploy --device cpu          # SDK CLI: headless server on 127.0.0.1:8000
python src/main.py predict IMAGES --device cpu  # SDK CLI: annotations written to ./predictions
"""

import sys

from kosmos2_app.config import limit_opencv_decoding, return_freed_memory

limit_opencv_decoding()  # before supervisely imports cv2, which reads the limit once
return_freed_memory()  # decoded images' memory goes back to the system when they are dropped

from fastapi import HTTPException  # noqa: E402

from kosmos2_app.local_env import load_local_env  # noqa: E402
from kosmos2_app.model import Kosmos2  # noqa: E402

load_local_env()
try:
    model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
except HTTPException as error:  # CLI predict or deploy loads the model at once: say why it cannot, in one line
    sys.exit(f"Kosmos-2 could not be deployed (HTTP {error.status_code}): {error.detail}")
model.serve()
