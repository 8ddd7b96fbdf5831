"""The SDK's Predict App, headless, in a process of its own (as the platform runs it: its widgets
and application are process-wide state that would leak into other tests), driven through the
steps its GUI makes: input (a project), model (connect to a serving session), classes, output
(a new project), run.

``python -m tests.support.predict_app PLAN`` where PLAN is JSON: ``{"api": stand-in API URL,
"server": the serving app's URL, "session": its task id, "project": project id, "offered":
classes to select on the deploy as it is, "declare": classes to deploy with, "run": classes to
select for the run}``. Prints one line, :data:`REPORT` and JSON: ``nothing_selected`` and ``offered_selected`` (what
the class step's check said), ``offered`` (the classes the table listed), ``selected``, and
``predictions`` (how many the run returned). Environment: ``TEAM_ID``, ``WORKSPACE_ID``,
``SERVER_ADDRESS`` (the stand-in), ``API_TOKEN``.
"""

from __future__ import annotations

import json
import sys

import requests

REPORT = "predict-app report: "  # the report line's start (the SDK logs to stdout too)


def _deploy(server: str, classes: list[str] | None) -> None:
    """The model deployed again, declaring ``classes`` (None: COCO's, as a fresh deploy)."""
    from kosmos2_app.ontology import COCO_CLASSES

    params = {"model_source": "Pretrained models", "device": "cpu", "classes": classes or list(COCO_CLASSES)}
    state = {"deploy_params": params, "model_name": "Kosmos-2"}
    response = requests.post(f"{server}/deploy_from_api", json={"state": state}, timeout=120)
    response.raise_for_status()


def drive(plan: dict) -> dict:
    import supervisely as sly
    from supervisely.nn.inference.predict_app.predict_app import PredictApp

    app = PredictApp(sly.Api(plan["api"], "token", ignore_task_id=True, retry_count=1))
    gui, report = app.gui, {}
    gui.input_selector.load_from_json({"project_id": plan["project"]})
    gui.model_selector.model.load_from_json({"mode": "connect", "session_id": plan["session"]})
    assert gui.model_selector.model.deploy() is not None, "the Connect button found no session"
    report["offered"] = gui.classes_selector.classes_table.to_pandas().iloc[:, 0].tolist()
    report["nothing_selected"] = gui.classes_selector.validate_step()
    gui.classes_selector.load_from_json({"classes": plan["offered"]})
    report["offered_selected"] = gui.classes_selector.validate_step()
    _deploy(plan["server"], plan["declare"])
    try:
        assert gui.model_selector.model.deploy() is not None
        gui.classes_selector.load_from_json({"classes": plan["run"]})
        report["selected"] = gui.classes_selector.get_selected_classes()
        gui.output_selector.load_from_json({"project_name": "Predictions"})
        report["predictions"] = len(app.run())
    finally:
        _deploy(plan["server"], None)
    return report


if __name__ == "__main__":
    print(REPORT + json.dumps(drive(json.loads(sys.argv[1]))))
