"""Serve Kosmos-2 as a Supervisely app.

    uvicorn main:model.app --app-dir src            # the serving GUI (model table, Serve button)
    python src/main.py deploy --device cpu          # SDK CLI: headless server on port 8000
    python src/main.py predict IMAGES --device cpu  # SDK CLI: annotations written to ./predictions
"""

import supervisely as sly
from dotenv import load_dotenv

from kosmos2_app import Kosmos2

if sly.is_development():
    load_dotenv("local.env")

model = Kosmos2(use_gui=True, use_serving_gui_template=True, sliding_window_mode="none")
model.serve()
