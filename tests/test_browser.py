"""The notebooks as a learner runs them: JupyterLab in a real (headless) Chromium, driven with selenium.

Every notebook of the series, in order, is opened from the file browser, its parameters cell is edited (smoke
profile, synthetic data, one report folder for all), and Run > Run All Cells runs it, as a person would.
The test looks at what the page then holds: no error output, figures drawn, 06's widget redrawing its
figure when the selection changes, and a deliberate mistake shown as a short message. Screenshots are kept in the test's temporary folder.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs them) and selenium; where
they are absent the test skips and says why. No browser is downloaded at run time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
selenium = pytest.importorskip("selenium", reason="selenium is in the dev extras: make test installs it")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (apt-get)"),
]

# the state of the open notebook, read from JupyterLab's own model (window.jupyterapp, exposed for tests)
STATE_JS = """
const w = window.jupyterapp.shell.currentWidget;
if (!w || !w.content || !w.content.model || !w.sessionContext.session || !w.sessionContext.session.kernel) return null;
const cells = [];
for (const c of w.content.model.cells) {
  cells.push({type: c.type, count: c.type === 'code' ? c.executionCount : null,
              outputs: c.type === 'code' ? c.outputs.toJSON() : []});
}
return {kernel: w.sessionContext.session.kernel.status, cells: cells,
        images: w.node.querySelectorAll('.jp-OutputArea-output img').length};
"""
SET_PARAMETERS_JS = """
const w = window.jupyterapp.shell.currentWidget;
for (const c of w.content.model.cells) {
  if ((c.getMetadata('tags') || []).includes('parameters')) { c.sharedModel.setSource(arguments[0]); return true; }
}
return false;
"""
PARAMETERS_JS = """
const w = window.jupyterapp.shell.currentWidget;
for (const c of w.content.model.cells) {
  if ((c.getMetadata('tags') || []).includes('parameters')) return c.sharedModel.getSource();
}
return null;
"""


def server_port(runtime: Path, server: subprocess.Popen, seconds: float = 90) -> int:
    """The port JupyterLab chose itself (``--port=0``), read from the runtime file it writes once it listens:
    no port is picked here, closed, and hoped to be free still."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.poll() is None:
        for info in runtime.glob("jpserver-*.json"):
            try:
                return int(json.loads(info.read_text())["port"])
            except (ValueError, KeyError, OSError):
                pass  # being written
        time.sleep(0.5)
    raise RuntimeError(f"JupyterLab did not start (see {runtime.parent / 'lab.log'})")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 (a free port, no token) over a copy of notebooks/, and a headless Chromium on it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    home = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", home / "notebooks")  # the browser's autosave never touches the committed ones
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--port=0",
        "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
        f"--ServerApp.root_dir={home}", "--LabApp.expose_app_in_browser=True",
    ]  # fmt: skip
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "CIFARKIT_DATA": str(home / "data"),
    }
    server = subprocess.Popen(cmd, stdout=open(home / "lab.log", "w"), stderr=subprocess.STDOUT, env=env)
    driver = None
    try:
        port = server_port(home / "runtime", server)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
            "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-quic", f"--user-data-dir={home / 'chromium'}",
        ):  # fmt: skip
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
        driver.get(f"http://127.0.0.1:{port}/lab/tree/notebooks")
        wait_for(driver, lambda d: d.find_elements("css selector", ".jp-DirListing-item"), 90, "the file browser")
        yield driver, home
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(30)


def wait_for(driver, condition, seconds: float, what: str):
    """Poll ``condition`` until it holds. An element the page redraws between finding and reading it (06's
    widget replaces its image on every change) raises StaleElementReferenceException: that is the redraw
    being waited for, so the condition is read again, never failed on."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = condition(driver)
        except StaleElementReferenceException:
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"gave up waiting for {what} after {seconds} s")


def open_notebook(driver, name: str) -> None:
    """Double-click the notebook in the file browser and wait for its kernel."""
    from selenium.webdriver.common.action_chains import ActionChains

    def listed(d):
        items = d.find_elements("css selector", ".jp-DirListing-item")
        return [i for i in items if f"Name: {name}.ipynb" in (i.get_attribute("title") or "")]

    (item,) = wait_for(driver, listed, 60, f"{name} in the file browser")
    ActionChains(driver).double_click(item).perform()
    wait_for(driver, lambda d: (d.execute_script(STATE_JS) or {}).get("kernel") == "idle", 120, f"{name}'s kernel")


def set_parameters(driver, **values: str) -> None:
    """Edit lines of the parameters cell (``name = value``), as a learner edits it."""
    source = driver.execute_script(PARAMETERS_JS)
    for name, value in values.items():
        source, count = re.subn(rf"^{name} = [^#\n]*?(\s*#.*)?$", rf"{name} = {value}\1", source, flags=re.M)
        assert count == 1, (name, source)
    assert driver.execute_script(SET_PARAMETERS_JS, source)


def menu(driver, top: str, entry: str) -> None:
    """Click ``top`` in the menu bar, then ``entry`` in its menu."""
    driver.find_element("xpath", f"//div[contains(@class, 'lm-MenuBar-itemLabel') and text()='{top}']").click()
    driver.find_element("xpath", f"//div[contains(@class, 'lm-Menu-itemLabel') and text()='{entry}']").click()


def run_all(driver, seconds: float) -> dict:
    """Edit > Clear Outputs of All Cells, Run > Run All Cells; wait until every code cell ran (or one
    failed) and the kernel is idle."""
    menu(driver, "Edit", "Clear Outputs of All Cells")
    menu(driver, "Run", "Run All Cells")

    def finished(d):
        state = d.execute_script(STATE_JS)
        code = [c for c in state["cells"] if c["type"] == "code"]
        failed = any(o["output_type"] == "error" for c in code for o in c["outputs"])
        done = all(c["count"] for c in code)
        return state if state["kernel"] == "idle" and (done or failed) else None

    time.sleep(2)
    return wait_for(driver, finished, seconds, "Run All Cells to finish")


def errors(state: dict) -> list[dict]:
    return [o for c in state["cells"] for o in c["outputs"] if o["output_type"] == "error"]


SMOKE = {"dataset": '"synthetic"', "profile": '"smoke"', "interactive": "True"}


def run_notebook(driver, home: Path, name: str, seconds: float) -> None:
    """Open ``name``, set the smoke parameters (one shared report folder), Run All; no error, a figure drawn."""
    open_notebook(driver, name)
    set_parameters(driver, report_dir=json.dumps(str(home / "report")), **SMOKE)
    state = run_all(driver, seconds)
    driver.save_screenshot(str(home / f"{name}.png"))
    assert errors(state) == [], (name, errors(state)[:1])
    assert state["images"] >= 1, f"{name} drew no figure"


def test_notebooks_run_in_jupyterlab_as_a_learner_runs_them(lab):
    """Every notebook of the series, in its order, into one report folder (as a learner steps through them)."""
    driver, home = lab
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(notebooks) == 10 and notebooks[6] == "06_compare_runs", notebooks
    for name in notebooks[:6]:
        run_notebook(driver, home, name, 300)

    run_notebook(driver, home, "06_compare_runs", 180)
    from selenium.webdriver.support.ui import Select

    def figure(d):
        return [i.get_attribute("src") for i in d.find_elements("css selector", ".widget-output img")]

    def widget_text(d):
        return " ".join(o.text for o in d.find_elements("css selector", ".widget-output"))

    pickers = wait_for(
        driver, lambda d: d.find_elements("css selector", ".widget-select-multiple select"), 30, "06's picker"
    )
    runs, metric = Select(pickers[0]), Select(driver.find_element("css selector", ".widget-dropdown select"))
    before = wait_for(driver, figure, 30, "the widget's figure")
    shown = [o.get_attribute("index") for o in runs.all_selected_options]  # the first runs, by default
    assert shown, "06's picker starts with no run selected"
    runs.deselect_all()  # an empty selection: a hint, no empty axes
    wait_for(
        driver, lambda d: not figure(d) and "Select one or more runs" in widget_text(d), 30, "the empty-selection hint"
    )
    for index in shown:  # the same selection again: the same figure
        runs.select_by_index(int(index))
    wait_for(driver, lambda d: figure(d) == before, 30, "the figure to come back")
    metric.select_by_value("val_losses")
    wait_for(driver, lambda d: figure(d) and figure(d) != before, 30, "the widget to redraw for another metric")
    driver.save_screenshot(str(home / "06_compare_runs.png"))

    for name in notebooks[7:]:
        run_notebook(driver, home, name, 300)


def run_with_a_mistake(driver, home: Path, shot: str, **values: str) -> tuple[dict, dict]:
    """00 with ``values`` in its parameters cell, Run All; the screenshot shows the error message. Returns the page
    state and its one error."""
    open_notebook(driver, "00_data_exploration")
    set_parameters(driver, **values, report_dir=json.dumps(str(home / shot)))
    state = run_all(driver, 120)
    driver.execute_script(
        "document.querySelector('.jp-RenderedText[data-mime-type=\"application/vnd.jupyter.stderr\"]')"
        ".scrollIntoView({block: 'center'})"
    )
    driver.save_screenshot(str(home / f"00_{shot}.png"))
    (error,) = errors(state)
    return state, error


def test_a_mistake_in_the_parameters_is_a_short_message(lab):
    driver, home = lab
    _, error = run_with_a_mistake(driver, home, "mistake", dataset='"no-such-dataset"', profile='"smoke"')
    assert error["ename"] == "DataError" and len(error["traceback"]) <= 3, error
    assert "unknown dataset 'no-such-dataset'" in error["traceback"][0]


def test_a_value_out_of_range_stops_the_first_cell_in_the_parameters_terms(lab):
    """A parameter the notebook passes to start() (00's per_class: a grid of 5,000 images a class) is refused
    by the cell that starts the notebook, named as the line of the parameters cell to change."""
    driver, home = lab
    state, error = run_with_a_mistake(driver, home, "out_of_range", per_class="5000", **SMOKE)
    assert error["ename"] == "ConfigError" and len(error["traceback"]) <= 3, error
    assert "`per_class` in the parameters cell: 5000 must be an integer >= 1 and <= 100" in error["traceback"][0]
    assert state["images"] == 0  # stopped in the first cell: no grid of 50,000 images was drawn


def test_a_wait_survives_the_redraws_it_waits_for():
    """06's empty-selection check read an image the widget had just redrawn away, and the test failed with
    StaleElementReferenceException on one fresh clone: the wait now reads the page again."""
    from selenium.common.exceptions import StaleElementReferenceException

    answers = iter([StaleElementReferenceException("the widget redrew it"), None, "the new image"])

    def condition(driver):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_for(None, condition, 30, "a redrawn image") == "the new image"
