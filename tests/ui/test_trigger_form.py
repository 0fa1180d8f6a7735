"""The trigger form of windows-batch-compute-dag, used the way a person uses it.

Real Airflow (`airflow standalone`, local backend) and headless Chromium: open the DAG, open
"Trigger", check that every field explains itself, that bad input is refused before a run exists,
then trigger a small real study and follow it to its results.png through the run's note.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.parse
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

if TYPE_CHECKING:
    from .conftest import AirflowUI

DAG_ID = "windows-batch-compute-dag"
pytestmark = [pytest.mark.browser, pytest.mark.airflow]

# The fields a person sets for every study: first, and visible as soon as the form opens.
COMMON_FIELDS = ("s3_bucket", "num_tasks", "ebn0_db")
# Fields the issue names that must be typed as numbers in the form (cluster_size: a choice of
# auto or a number, issue 12).
NUMBER_FIELDS = ("num_tasks", "max_bits_per_task", "target_errors", "seed")
ALLOCATIONS = {"equal", "adaptive"}
# The defaults issue 3 gives for the form.
ISSUE_DEFAULTS = {
    "num_tasks": 200,
    "ebn0_db": [0, 2, 4, 6, 8, 10, 11, 12],
    "cluster_size": "auto",  # issue 12: sized by the estimate unless the user picks a number
    "s3_prefix_task_results": "sim/task_results",
    "s3_prefix_aggregate_results": "sim/aggregate_results",
}
# A small study Octave finishes in seconds: 4 tasks over 4 points, at most 200 000 bits each.
SMALL_STUDY = {
    "s3_bucket": "ui-test-results",
    "num_tasks": 4,
    "ebn0_db": [0, 2, 4, 6],
    "max_bits_per_task": 200_000,
}
RUN_TIMEOUT_S = 300.0
TERMINAL_STATES = {"success", "failed"}

# One pass over the form's DOM: for every param field, its section, label, help text, widget.
# Airflow 3.3's form: an accordion item per section; a Chakra field per param whose widget
# carries id or name `element_<param>`.
_COLLECT_FIELDS_JS = """
form => Array.from(form.querySelectorAll('[data-scope=accordion][data-part=item]')).map(item => ({
  section: item.querySelector('[data-part=item-trigger]').innerText.trim(),
  open: item.getAttribute('data-state') === 'open',
  fields: Array.from(item.querySelectorAll('[data-scope=field][data-part=root]'))
    .map(field => {
      const widget = field.querySelector('[id^="element_"], [name^="element_"]');
      if (!widget) return null;
      const key = widget.id.startsWith('element_') ? widget.id : widget.getAttribute('name');
      const label = field.querySelector('[data-part=label]');
      const help = field.querySelector('[data-part=helper-text]');
      let kind = 'text';
      if (field.querySelector('[data-scope=number-input] input[role=spinbutton]')) kind = 'number';
      else if (field.querySelector('.monaco-editor, [data-mode-id=json]')) kind = 'json-list';
      else if (field.querySelector('textarea')) kind = 'lines';
      else if (field.querySelector('[role=combobox]')) kind = 'select';
      else if (field.querySelector('[data-scope=switch], input[type=checkbox]')) kind = 'switch';
      const input = field.querySelector('input[name^="element_"]');
      return {
        name: key.slice('element_'.length),
        label: label ? label.innerText.replace(/\\*\\s*$/, '').trim() : '',
        help: help ? help.innerText.trim() : '',
        kind: kind,
        shown: input ? input.value : null,
      };
    })
    .filter(f => f !== null),
}))
"""


def _open_trigger_form(
    page: Any, ui: AirflowUI, *, dag_id: str = DAG_ID, first: str = "num_tasks"
) -> Any:
    """Open the DAG page, press Trigger, wait for the params form; return the dialog."""
    page.goto(f"{ui.url}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_test_id("config-form").wait_for()
    # The params render once the DAG's details have loaded.
    dialog.locator(f'[id="element_{first}"], [name="element_{first}"]').first.wait_for(
        state="attached"
    )
    if dag_id == DAG_ID:
        # The Eb/N0 list's editor mounts last (about a second later once plugins add UI
        # views); if it never does, the form checks report the field, so no failure here.
        with suppress(PlaywrightTimeoutError):
            dialog.locator('[id="element_ebn0_db"] .monaco-editor').wait_for(timeout=15_000)
    return dialog


def _field(dialog: Any, name: str) -> Any:
    """The form row (label, widget, help text, error text) of one param."""
    widget = dialog.page.locator(f'[id="element_{name}"], [name="element_{name}"]')
    return dialog.locator("[data-scope=field][data-part=root]").filter(has=widget)


def _number_input(dialog: Any, name: str) -> Any:
    """The number input of a param, its section opened."""
    _show(dialog, name)
    return dialog.locator(f'[id="number-input:element_{name}"] input')


def _text_input(dialog: Any, name: str) -> Any:
    """The text input of a param, its section opened."""
    _show(dialog, name)
    return dialog.locator(f'input[id="element_{name}"]')


def _set_list(page: Any, dialog: Any, name: str, text: str) -> None:
    """Replace the content of a JSON list editor the way a person pastes it in.

    Typing key by key does not work: the editor auto-closes brackets and re-formats its content
    as soon as it parses, so the text is pasted (one change, as a person would).
    """
    _show(dialog, name)
    editor = dialog.locator(f'[id="element_{name}"] .view-lines')
    editor.click()
    page.evaluate("text => navigator.clipboard.writeText(text)", text)
    page.keyboard.press("Control+A")
    page.keyboard.press("Control+V")
    page.wait_for_timeout(300)


def _error_texts(dialog: Any) -> list[str]:
    """Every error the form shows: per-field messages and the alert of a refused trigger."""
    texts = dialog.locator("[data-scope=field][data-part=error-text]").all_inner_texts()
    texts += dialog.get_by_test_id("error-alert").all_inner_texts()
    return [t.strip() for t in texts if t.strip()]


def _run_ids(ui: AirflowUI, dag_id: str = DAG_ID) -> set[str]:
    runs = ui.get(f"dags/{dag_id}/dagRuns?limit=100")["dag_runs"]
    return {run["dag_run_id"] for run in runs}


def _delete_runs(ui: AirflowUI, run_ids: set[str], dag_id: str = DAG_ID) -> None:
    """Remove runs a failed check created, so they do not compete with the other tests."""
    for run_id in run_ids:
        ui.api("DELETE", f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")


def _press_trigger_and_expect_refusal(
    page: Any,
    dialog: Any,
    ui: AirflowUI,
    *,
    name: str,
    title: str,
    bad: str,
    hint: str = "",
    dag_id: str = DAG_ID,
) -> None:
    """Press Trigger (if the form lets us) and check the input is refused before any run exists.

    Refused means: no run was created, and the form shows a message that names the field,
    either in that field's own row (its label is the field's title) or in the alert of the
    refused request (which names the param).
    """
    before = _run_ids(ui, dag_id)
    submit = dialog.get_by_test_id("trigger-dag-submit")
    server_answer = None
    if submit.is_enabled():
        with page.expect_response(
            lambda r: r.request.method == "POST" and r.url.endswith(f"/dags/{dag_id}/dagRuns")
        ) as response:
            submit.click()
        server_answer = f"HTTP {response.value.status}: {response.value.text()[:300]}"
        if response.value.status >= 400:
            dialog.get_by_test_id("error-alert").wait_for(timeout=10_000)
    created = _run_ids(ui, dag_id) - before
    if created:
        _delete_runs(ui, created, dag_id)
    assert not created, (
        f"{name}={bad}: the form started a run instead of refusing the input "
        f"(server answered {server_answer}; created {sorted(created)}). {hint}"
    )
    row_errors = _field(dialog, name).locator("[data-part=error-text]").all_inner_texts()
    alert = " ".join(dialog.get_by_test_id("error-alert").all_inner_texts())
    named_in_alert = re.search(rf"\b{re.escape(name)}\b", alert) or title in alert
    assert row_errors or named_in_alert, (
        f"{name}={bad} was refused but no message names the field: errors shown "
        f"{_error_texts(dialog)!r}"
    )


@pytest.fixture(scope="module")
def dag_params(airflow_ui: AirflowUI) -> dict[str, Any]:
    """The DAG's params as the API serves them to the form: value, schema, description."""
    return dict(airflow_ui.get(f"dags/{DAG_ID}/details")["params"])


@pytest.fixture
def clipboard_page(page: Any) -> Any:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    return page


@pytest.mark.screenshots
def test_trigger_form_explains_every_field(
    page: Any,
    airflow_ui: AirflowUI,
    dag_params: dict[str, Any],
    screenshots_dir: Path | None,
) -> None:
    """Titles, descriptions, widgets, grouping and defaults; every defect is listed at once."""
    dialog = _open_trigger_form(page, airflow_ui)
    sections = dialog.get_by_test_id("config-form").evaluate(_COLLECT_FIELDS_JS)
    fields = {
        f["name"]: {**f, "section": s["section"], "open": s["open"]}
        for s in sections
        for f in s["fields"]
    }
    assert set(fields) == set(dag_params), (
        f"the form shows {sorted(fields)} but the DAG declares {sorted(dag_params)}"
    )
    if screenshots_dir is not None:
        _screenshot_form(dialog, screenshots_dir / "trigger-form.png")
    problems = _explanation_problems(fields)
    problems += _widget_problems(fields, dag_params)
    problems += _grouping_problems(fields, [f["name"] for s in sections for f in s["fields"]])
    problems += _allocation_problems(dialog, dag_params)
    problems += _shown_default_problems(fields, dag_params)
    sent = _conf_the_form_would_send(dialog)
    if sent is None:
        problems.append(f"the untouched form cannot be triggered: {_error_texts(dialog)}")
    else:
        problems += _sent_default_problems(sent, dag_params)
    assert not problems, "the trigger form is not self-explanatory:\n- " + "\n- ".join(problems)


def _explanation_problems(fields: dict[str, Any]) -> list[str]:
    problems = []
    for name, field in fields.items():
        if field["label"] in {"", name}:
            problems.append(f"{name!r} has no title (Param(..., title=...))")
        if len(field["help"]) < 15:
            problems.append(f"{name!r} has no useful description: {field['help']!r}")
    return problems


def _advanced(fields: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The advanced fields: (timeouts, prefixes)."""
    return [n for n in fields if "timeout" in n], [n for n in fields if "prefix" in n]


def _widget_problems(fields: dict[str, Any], dag_params: dict[str, Any]) -> list[str]:
    """Numbers as numbers, the Eb/N0 list as a list of numbers, allocation a choice."""
    problems = []
    timeouts, prefixes = _advanced(fields)
    for name in (*NUMBER_FIELDS, *timeouts):
        kind = fields[name]["kind"] if name in fields else "missing"
        if kind != "number":
            problems.append(f"{name!r} renders as {kind}, not a number input")
    ebn0_schema = dag_params["ebn0_db"]["schema"]
    items_type = ebn0_schema.get("items", {}).get("type")
    if fields["ebn0_db"]["kind"] != "json-list" or items_type != "number":
        problems.append(
            f"ebn0_db must render as a list of numbers (type array, items type number); "
            f"it renders as {fields['ebn0_db']['kind']} with schema {ebn0_schema}"
        )
    for name in ("allocation", "cluster_size"):
        if fields[name]["kind"] != "select":
            problems.append(f"{name} renders as {fields[name]['kind']}, not a choice")
    for name in ("s3_bucket", *prefixes):
        if fields[name]["kind"] != "text":
            problems.append(f"{name!r} renders as {fields[name]['kind']}, not a text field")
    return problems


def _grouping_problems(fields: dict[str, Any], order: list[str]) -> list[str]:
    """Common fields first and visible when the form opens; timeouts and prefixes after."""
    problems = []
    timeouts, prefixes = _advanced(fields)
    if len(timeouts) < 2 or len(prefixes) < 2:
        problems.append(f"expected two timeouts and two prefixes: {timeouts}, {prefixes}")
    if order[: len(COMMON_FIELDS)] != list(COMMON_FIELDS):
        problems.append(f"the form starts with {order[:3]}, not {list(COMMON_FIELDS)}")
    hidden = [n for n in COMMON_FIELDS if not fields[n]["open"]]
    if hidden:
        problems.append(
            f"{hidden} are hidden when the form opens: their section "
            f"{fields[hidden[0]]['section']!r} starts collapsed (Airflow 3.3 opens only the "
            "default section 'Run Parameters'; declare these params without section=...)"
        )
    first_section = fields[order[0]]["section"]
    last_common = max(order.index(n) for n in COMMON_FIELDS)
    for name in (*timeouts, *prefixes):
        if order.index(name) < last_common or fields[name]["section"] == first_section:
            problems.append(f"advanced field {name!r} is not in a section after the common ones")
    return problems


def _allocation_problems(dialog: Any, dag_params: dict[str, Any]) -> list[str]:
    """The choice offers exactly the two allocations (by their display names, if any)."""
    problems = []
    schema = dag_params["allocation"]["schema"]
    if set(schema.get("enum", [])) != ALLOCATIONS:
        problems.append(f"allocation's choices are not {ALLOCATIONS}: {schema}")
    display = schema.get("values_display") or {}
    expected = {display.get(value, value) for value in ALLOCATIONS}
    _show(dialog, "allocation")
    _field(dialog, "allocation").get_by_role("combobox").click()
    offered = set(dialog.page.get_by_role("option").all_inner_texts())
    # Close the menu with Tab: Escape would close the whole dialog.
    dialog.page.keyboard.press("Tab")
    if offered != expected:
        problems.append(f"allocation offers {offered}, expected {expected}")
    return problems


def _shown_default_problems(fields: dict[str, Any], dag_params: dict[str, Any]) -> list[str]:
    """The inputs show the declared defaults, and each default is valid for its own schema."""
    problems = []
    timeouts, prefixes = _advanced(fields)
    for name in ("s3_bucket", "num_tasks", *timeouts, *prefixes):
        shown, declared = fields[name]["shown"], dag_params[name]["value"]
        if shown != str(declared):
            problems.append(f"{name!r} shows {shown!r}, its default is {declared!r}")
    for name, param in dag_params.items():
        try:
            jsonschema.validate(param["value"], param["schema"])
        except jsonschema.ValidationError as exc:
            problems.append(f"the default of {name!r} breaks its own schema: {exc.message}")
    return problems


def _sent_default_problems(sent: dict[str, Any], dag_params: dict[str, Any]) -> list[str]:
    """The untouched form sends the declared defaults, which are the issue's defaults."""
    problems = []
    if sent != {name: p["value"] for name, p in dag_params.items()}:
        problems.append(f"the untouched form sends {sent}, not the declared defaults")
    for name, value in ISSUE_DEFAULTS.items():
        if sent.get(name) != value:
            problems.append(f"default {name}={sent.get(name)!r}, the issue says {value!r}")
    if not sent.get("s3_bucket"):
        problems.append("the bucket has no default (the deployment's bucket)")
    return problems


def _show(dialog: Any, name: str) -> None:
    """Open the (collapsed) section that holds a param's field, as a person would."""
    item = dialog.locator("[data-scope=accordion][data-part=item]").filter(
        has=dialog.page.locator(f'[id="element_{name}"], [name="element_{name}"]')
    )
    trigger = item.locator("[data-part=item-trigger]").first
    if trigger.get_attribute("aria-expanded") == "false":
        trigger.click()
    _field(dialog, name).first.wait_for(state="visible")


def _conf_the_form_would_send(dialog: Any) -> dict[str, Any] | None:
    """Press Trigger with the request held back at the browser: the conf the form sends.

    The route stays until the page closes: the UI may retry a failed request, and a retry that
    got through would start a full default study.
    """
    page = dialog.page
    submit = dialog.get_by_test_id("trigger-dag-submit")
    if not submit.is_enabled():
        return None
    sent: list[dict[str, Any]] = []

    def hold_back(route: Any) -> None:
        if route.request.method == "POST":
            sent.append(route.request.post_data_json)
            route.abort()
        else:
            route.continue_()

    page.route(f"**/api/v2/dags/{DAG_ID}/dagRuns", hold_back)
    submit.click()
    deadline = time.monotonic() + 10
    while not sent and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert sent, "pressing Trigger with the defaults sent no request"
    return dict(sent[0]["conf"])


def _screenshot_form(dialog: Any, path: Path) -> None:
    """The whole form as it opens (first section open), as one picture for the README."""
    page = dialog.page
    first = dialog.locator("[data-testid=config-form] [data-part=item-trigger]").first
    if first.get_attribute("aria-expanded") == "false":
        first.click()
    page.wait_for_timeout(800)  # the section's opening animation
    # A window tall enough for the whole dialog, then a clip of the page around the dialog
    # (an element screenshot drops the dialog's footer with the Trigger button).
    box = dialog.bounding_box()
    page.set_viewport_size({"width": 1400, "height": int(box["y"] + box["height"] + 80)})
    page.wait_for_timeout(500)
    page.screenshot(path=str(path), clip=dialog.bounding_box(), animations="disabled")
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_negative_task_count_is_refused(page: Any, airflow_ui: AirflowUI) -> None:
    dialog = _open_trigger_form(page, airflow_ui)
    _number_input(dialog, "num_tasks").fill("-5")
    title = _field(dialog, "num_tasks").locator("[data-part=label]").inner_text()
    _press_trigger_and_expect_refusal(
        page,
        dialog,
        airflow_ui,
        name="num_tasks",
        title=title.rstrip(" *"),
        bad="-5",
        hint=(
            "Airflow's number input silently replaces a value below the schema's `minimum` by "
            "the minimum when the field loses focus, so -5 is sent as 1: declare num_tasks "
            "with exclusiveMinimum=0 instead of minimum=1 (same bound for an integer) and the "
            "server refuses -5 naming num_tasks."
        ),
    )


def test_letters_in_task_count_are_refused(page: Any, airflow_ui: AirflowUI) -> None:
    dialog = _open_trigger_form(page, airflow_ui)
    number = _number_input(dialog, "num_tasks")
    number.fill("")
    number.press_sequentially("abc")
    assert number.input_value() == "", "the number input accepted letters"
    assert _field(dialog, "num_tasks").locator("[data-part=error-text]").all_inner_texts(), (
        "an empty task count shows no message in its row"
    )
    assert not dialog.get_by_test_id("trigger-dag-submit").is_enabled()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param("[]", "an empty list", id="empty"),
        pytest.param('[0, 2, "six"]', "a word in the list", id="non-numeric"),
        pytest.param("[0, 2, six]", "an unquoted word", id="non-numeric-unquoted"),
    ],
)
def test_bad_ebn0_list_is_refused(
    clipboard_page: Any, airflow_ui: AirflowUI, text: str, why: str
) -> None:
    page = clipboard_page
    dialog = _open_trigger_form(page, airflow_ui)
    before = _run_ids(airflow_ui)
    _set_list(page, dialog, "ebn0_db", text)
    row_errors = _field(dialog, "ebn0_db").locator("[data-part=error-text]").all_inner_texts()
    assert row_errors, f"Eb/N0 points {text} ({why}) shows no message in its row"
    submit = dialog.get_by_test_id("trigger-dag-submit")
    if submit.is_enabled():
        _press_trigger_and_expect_refusal(
            page, dialog, airflow_ui, name="ebn0_db", title="Eb/N0", bad=text
        )
    assert _run_ids(airflow_ui) == before


def test_unknown_allocation_cannot_be_chosen(page: Any, airflow_ui: AirflowUI) -> None:
    dialog = _open_trigger_form(page, airflow_ui)
    _show(dialog, "allocation")
    combobox = _field(dialog, "allocation").get_by_role("combobox")
    combobox.click()
    combobox.press_sequentially("round-robin")
    assert page.get_by_role("option").count() == 0, "the choice offers a value it should not"
    combobox.press("Enter")
    page.keyboard.press("Tab")
    chosen = dialog.locator('input[type=hidden][name="element_allocation"]').input_value()
    assert chosen in ALLOCATIONS, chosen


def test_cluster_size_offers_auto_and_numbers_and_sends_a_number(
    page: Any, airflow_ui: AirflowUI
) -> None:
    dialog = _open_trigger_form(page, airflow_ui)
    _show(dialog, "cluster_size")
    combobox = _field(dialog, "cluster_size").get_by_role("combobox")
    combobox.click()
    offered = page.get_by_role("option").all_inner_texts()
    assert offered[0].startswith("auto"), offered
    assert any(option.startswith("3 ") for option in offered), offered
    page.get_by_role("option").filter(has_text="3 (").first.click()
    sent = _conf_the_form_would_send(dialog)
    assert sent is not None, _error_texts(dialog)
    assert sent["cluster_size"] == 3, sent  # the number, not the string "3"


def test_bad_bucket_name_is_refused(page: Any, airflow_ui: AirflowUI) -> None:
    dialog = _open_trigger_form(page, airflow_ui)
    _text_input(dialog, "s3_bucket").fill("My_Results_Bucket")
    title = _field(dialog, "s3_bucket").locator("[data-part=label]").inner_text()
    _press_trigger_and_expect_refusal(
        page,
        dialog,
        airflow_ui,
        name="s3_bucket",
        title=title.rstrip(" *"),
        bad="My_Results_Bucket",
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("num_tasks", -5, id="negative-tasks"),
        pytest.param("ebn0_db", [], id="empty-ebn0"),
        pytest.param("ebn0_db", [0, "six"], id="non-numeric-ebn0"),
        pytest.param("allocation", "round-robin", id="unknown-allocation"),
        pytest.param("s3_bucket", "My_Results_Bucket", id="bad-bucket"),
        pytest.param("cluster_size", "big", id="cluster-size-other-string"),
    ],
)
def test_rest_api_refuses_bad_input(airflow_ui: AirflowUI, name: str, value: Any) -> None:
    """What the widgets cannot hold, the server refuses too, naming the field, with no run."""
    before = _run_ids(airflow_ui)
    status, body = airflow_ui.api(
        "POST",
        f"dags/{DAG_ID}/dagRuns",
        {
            "logical_date": None,
            "conf": {name: value},
        },
    )
    created = _run_ids(airflow_ui) - before
    _delete_runs(airflow_ui, created)
    assert status == 400, f"{name}={value!r} accepted: HTTP {status}: {body}"
    assert not created
    # Airflow's own message for a param its schema refuses (ParamsDict.validate), not merely
    # the name, which a body echoing the request would contain too.
    detail = body.get("detail") if isinstance(body, dict) else None
    assert isinstance(detail, str), f"the refusal carries no message: {body}"
    assert detail.startswith(f"Invalid input for param {name}: "), (
        f"the refusal is not the schema's for {name!r}: {body}"
    )


def test_more_points_than_tasks_fails_in_plan_tasks(page: Any, airflow_ui: AirflowUI) -> None:
    """What the schema cannot express is refused by plan_tasks, before anything else runs.

    2 tasks for the 8 default Eb/N0 points passes the form (each field is valid on its own),
    so a run starts; plan_tasks must fail it with a message naming the field, and neither
    scale_out, simulate nor aggregate may run.
    """
    dialog = _open_trigger_form(page, airflow_ui)
    _number_input(dialog, "num_tasks").fill("2")
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(f"/dags/{DAG_ID}/dagRuns")
    ) as response:
        dialog.get_by_test_id("trigger-dag-submit").click()
    assert response.value.status == 200, response.value.text()
    run_id = response.value.json()["dag_run_id"]

    assert _wait_for_run(airflow_ui, run_id) == "failed"
    tis = airflow_ui.get(f"{airflow_ui.run_path(run_id)}/taskInstances?limit=100")
    states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in tis["task_instances"]}
    assert states[("plan_tasks", -1)] == "failed", states
    # The teardowns run whatever happened: scale_in (setting the cluster to 0 is safe) and
    # finish, the run's verdict, which touches nothing and fails because plan_tasks did.
    assert states.get(("finish", -1)) == "failed", states
    started = {"success", "running", "failed", "queued", "deferred", "up_for_retry"}
    ran = {
        key: state
        for key, state in states.items()
        if key[0] not in {"plan_tasks", "scale_in", "finish"} and state in started
    }
    assert not ran, f"tasks ran although the input was invalid: {ran}"
    log = airflow_ui.get(
        f"{airflow_ui.run_path(run_id)}/taskInstances/plan_tasks/logs/1?full_content=true"
    )
    assert re.search(r"\bebn0_db\b", json.dumps(log)), "plan_tasks' log does not name ebn0_db"

    # A person reads it in plan_tasks' log in the UI.
    page.goto(f"{airflow_ui.url}/dags/{DAG_ID}/runs/{run_id}/tasks/plan_tasks")
    page.get_by_text(re.compile(r"ebn0_db.*tasks")).first.wait_for()


@pytest.mark.screenshots
def test_small_study_runs_and_links_its_results(
    clipboard_page: Any,
    airflow_ui: AirflowUI,
    dag_params: dict[str, Any],
    screenshots_dir: Path | None,
) -> None:
    page = clipboard_page
    dialog = _open_trigger_form(page, airflow_ui)
    _text_input(dialog, "s3_bucket").fill(SMALL_STUDY["s3_bucket"])
    _number_input(dialog, "num_tasks").fill(str(SMALL_STUDY["num_tasks"]))
    _number_input(dialog, "max_bits_per_task").fill(str(SMALL_STUDY["max_bits_per_task"]))
    _set_list(page, dialog, "ebn0_db", json.dumps(SMALL_STUDY["ebn0_db"]))
    assert not _error_texts(dialog), _error_texts(dialog)

    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(f"/dags/{DAG_ID}/dagRuns")
    ) as response:
        dialog.get_by_test_id("trigger-dag-submit").click()
    assert response.value.status == 200, response.value.text()
    run = response.value.json()
    run_id = run["dag_run_id"]
    for key, value in SMALL_STUDY.items():
        assert run["conf"][key] == value, (key, run["conf"])

    state = _wait_for_run(airflow_ui, run_id)
    tis = airflow_ui.get(f"{airflow_ui.run_path(run_id)}/taskInstances?limit=100")
    states = sorted((ti["task_id"], ti["map_index"], ti["state"]) for ti in tis["task_instances"])
    assert state == "success", (
        f"run {run_id} ended {state}; task instances: {states}\n{airflow_ui.log_tail()}"
    )
    simulate = [s for s in states if s[0] == "simulate"]
    assert len(simulate) == SMALL_STUDY["num_tasks"], states

    # The results are really there (and, for make screenshots, the README's plot).
    aggregate_prefix = run["conf"]["s3_prefix_aggregate_results"].strip("/")
    results_dir = airflow_ui.local_root / SMALL_STUDY["s3_bucket"] / aggregate_prefix / run_id
    results_png = results_dir / "results.png"
    assert results_png.is_file(), f"{results_png} does not exist"
    assert results_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if screenshots_dir is not None:
        shutil.copyfile(results_png, screenshots_dir / "results.png")
    results = json.loads((results_dir / "results.json").read_text())
    worst_errors = min(row["errors"] for row in results["rows"])

    # The note carries the one-line summary: points, bits, errors at the worst point.
    note = airflow_ui.get(airflow_ui.run_path(run_id)).get("note") or ""
    assert re.search(rf"\b{len(results['rows'])}\b[^.;\n]*\bpoints?\b", note, re.I), note
    assert re.search(r"\bbits?\b", note, re.I), f"the note has no bit count: {note!r}"
    assert re.search(rf"\b{worst_errors}\b[^.;\n]*\berrors?\b", note, re.I), (
        f"the note does not give the worst point's {worst_errors} errors: {note!r}"
    )

    # A person sees the way to the plot on the run's page: the note's first line names it,
    # and the note (one click) shows where the file is. Airflow's UI drops file:// links
    # (in notes and extra links alike), so locally the path itself must be shown as text.
    page.goto(f"{airflow_ui.url}/dags/{DAG_ID}/runs/{run_id}")
    edit_note = page.get_by_role("button", name="Edit note").first
    edit_note.wait_for()
    preview = edit_note.locator("..").inner_text()
    assert "results.png" in preview, (
        f"the run page's note preview (its first line) does not show the results: {preview!r}"
    )
    edit_note.click()
    shown_note = page.get_by_role("dialog").inner_text()
    links = _extra_links(airflow_ui, run_id)
    assert str(results_png) in shown_note, (
        f"the run's note does not show where results.png is ({results_png}); it shows "
        f"{shown_note!r}. Airflow's UI empties file:// links in notes and does not show "
        f"non-http(s) extra links ({links}): in the local backend, write the local path "
        "itself into the note (dags/windows_batch/results.py, note_text)."
    )


PRICING = "option-pricing"


def test_a_template_study_s_form_has_its_titles_sections_and_choices(
    page: Any, airflow_ui: AirflowUI
) -> None:
    """A job template's parameters, as the form shows them: each UI hint becomes a widget."""
    dialog = _open_trigger_form(page, airflow_ui, dag_id=PRICING, first="StrikeLow")
    sections = dialog.get_by_test_id("config-form").evaluate(_COLLECT_FIELDS_JS)
    fields = {f["name"]: {**f, "section": s["section"]} for s in sections for f in s["fields"]}
    assert fields["StrikeLow"]["label"] == "Lowest strike"
    assert fields["Spot"]["section"] == "Market"
    assert fields["Seed"]["section"] == "Precision and reproducibility"
    assert fields["cluster_size"]["section"].startswith("Advanced")
    assert fields["StrikeLow"]["kind"] == "number"
    assert fields["Variance"]["kind"] == "select"  # DROPDOWN_LIST
    assert fields["Comment"]["kind"] == "lines"  # MULTILINE_EDIT
    assert "Kernel" not in fields  # HIDDEN
    assert "Results" not in fields  # an OUT folder is the engine's to choose


def test_a_template_study_refuses_a_bad_value_naming_its_parameter(
    page: Any, airflow_ui: AirflowUI
) -> None:
    dialog = _open_trigger_form(page, airflow_ui, dag_id=PRICING, first="StrikeLow")
    _number_input(dialog, "Batches").fill("0")
    _press_trigger_and_expect_refusal(
        page,
        dialog,
        airflow_ui,
        name="Batches",
        title="Batches per strike",
        bad="0",
        dag_id=PRICING,
    )


def _wait_for_run(ui: AirflowUI, run_id: str) -> str:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    state = ""
    while time.monotonic() < deadline:
        state = ui.get(ui.run_path(run_id))["state"]
        if state in TERMINAL_STATES:
            return str(state)
        time.sleep(2)
    pytest.fail(f"run {run_id} still {state} after {RUN_TIMEOUT_S:.0f} s\n{ui.log_tail()}")


def _extra_links(ui: AirflowUI, run_id: str) -> dict[str, Any]:
    """Extra links of the aggregate task (empty when it has none)."""
    status, body = ui.api("GET", f"{ui.run_path(run_id)}/taskInstances/aggregate/links")
    if status != 200 or not isinstance(body, dict):
        return {}
    return dict(body.get("extra_links") or {})
